"""Forward-pass speed: clipforge vs Hugging Face transformers CLIP on the same random weights.

    pip install -e .[bench]
    python bench/forward_speed.py [--models ViT-B-32 small-vit] [--image-batch 32] [--text-batch 256]

Both run in this process with the same thread count and the same inputs; embeddings are checked
to agree before anything is timed. Prints images/s and texts/s (medians over repeats) and the
ratio clipforge / transformers; writes bench/results/forward.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import transformers

import clipforge
from clipforge.checkpoints.huggingface import config_to_huggingface, state_dict_to_huggingface

CAPTION_WORDS = ("a photo of a small red bicycle leaning against an old brick wall at sunset "
                 "two dogs playing in the snow with a bright blue ball near trees").split()


def caption_tokens(tokenizer: clipforge.Tokenizer, count: int, context_length: int) -> torch.Tensor:
    """Captions of 4 to 20 words, like alt-texts, tokenized to the model's context."""
    generator = torch.Generator().manual_seed(0)
    captions = []
    for _ in range(count):
        length = int(torch.randint(4, 21, (1,), generator=generator))
        picks = torch.randint(0, len(CAPTION_WORDS), (length,), generator=generator)
        captions.append(" ".join(CAPTION_WORDS[i] for i in picks))
    return tokenizer(captions, context_length=context_length, truncate=True)


def median_rate(run, items: int, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return items / statistics.median(times)


def compare(name: str, image_batch: int, text_batch: int, repeats: int) -> dict:
    ours = clipforge.create_model(name)
    theirs = transformers.CLIPModel(transformers.CLIPConfig(**config_to_huggingface(ours.config))).eval()
    theirs.load_state_dict(state_dict_to_huggingface(ours.state_dict()), strict=False)
    size = ours.image_size
    images = torch.randn(image_batch, 3, size, size)
    text = caption_tokens(clipforge.get_tokenizer(), text_batch, ours.context_length)
    with torch.inference_mode():
        agree_images = torch.allclose(ours.encode_image(images[:4]), theirs.get_image_features(pixel_values=images[:4]).pooler_output, atol=1e-4)
        agree_text = torch.allclose(ours.encode_text(text[:16]), theirs.get_text_features(input_ids=text[:16]).pooler_output, atol=1e-4)
        if not (agree_images and agree_text):
            raise SystemExit(f"{name}: embeddings disagree (images {agree_images}, text {agree_text}); not timing")
        result = {
            "model": name,
            "images_per_s": {"clipforge": median_rate(lambda: ours.encode_image(images), image_batch, repeats),
                             "transformers": median_rate(lambda: theirs.get_image_features(pixel_values=images), image_batch, repeats)},
            "texts_per_s": {"clipforge": median_rate(lambda: ours.encode_text(text), text_batch, repeats),
                            "transformers": median_rate(lambda: theirs.get_text_features(input_ids=text), text_batch, repeats)},
        }
    for kind in ("images_per_s", "texts_per_s"):
        result[kind]["ratio"] = result[kind]["clipforge"] / result[kind]["transformers"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["ViT-B-32", "small-vit"])
    parser.add_argument("--image-batch", type=int, default=32)
    parser.add_argument("--text-batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "forward.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = [compare(name, args.image_batch, args.text_batch, args.repeats) for name in args.models]
    print(f"fp32, {args.threads} threads, images batch {args.image_batch}, texts batch {args.text_batch} x 77 positions")
    print("| model | what | clipforge | transformers | ratio |\n|---|---|---|---|---|")
    for result in results:
        for kind in ("images_per_s", "texts_per_s"):
            row = result[kind]
            print(f"| {result['model']} | {kind.replace('_per_s', '/s')} | {row['clipforge']:.1f} | "
                  f"{row['transformers']:.1f} | {row['ratio']:.2f}x |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"threads": args.threads, "torch": torch.__version__,
                                    "transformers": transformers.__version__, "results": results}, indent=2))


if __name__ == "__main__":
    main()
