"""Captions per second of clipforge's tokenizer against open_clip's pure-Python SimpleTokenizer.

Usage: python bench/tokenizer_speed.py [--n 10000] [--repeats 5] [--batch 256] [--out PATH]

open_clip imports torchvision at package import, so its tokenizer module is loaded by file path;
install it without dependencies first:

    pip install --no-deps open_clip_torch

The captions are the built-in corpus's when it is prepared (`CLIPFORGE_DATA`), else generated
COCO-like ones (bench/captions.py). Both tokenizers read the same merges (the copy shipped in
clipforge's package), run in one process with the same torch thread count, and must produce identical tensors
before any timing. Results go to bench/results/tokenizer.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from captions import benchmark_captions, openai_merges
from clipforge.text import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
CASES = ROOT / "tests" / "data" / "tokenizer_cases.jsonl"
RESULTS = ROOT / "bench" / "results" / "tokenizer.json"


def reference_cases() -> list[dict]:
    """The `{"text", "ids"}` cases the tests use: reference ids of the OpenAI tokenizer."""
    return [json.loads(line) for line in CASES.read_text(encoding="utf-8").splitlines()]


def load_open_clip_tokenizer_module():
    spec = importlib.util.find_spec("open_clip")
    if spec is None:
        raise SystemExit("open_clip is not installed: pip install --no-deps open_clip_torch")
    path = Path(next(iter(spec.submodule_search_locations))) / "tokenizer.py"
    module_spec = importlib.util.spec_from_file_location("open_clip_tokenizer", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def captions_per_second(tokenize: Callable[[list[str]], torch.Tensor], captions: list[str], batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(captions), batch):
        tokenize(captions[i : i + batch])
    return len(captions) / (time.perf_counter() - start)


def check_ids(ours: Tokenizer, peer, cases: list[dict], captions: list[str]) -> list[str]:
    """Stop unless we match the reference cases and open_clip on every caption it handles like the
    reference; return the captions open_clip gets wrong (special-token text: it spells them
    <start_of_text>; \\x1c-\\x1f: its str.split treats them as whitespace)."""
    wrong = [case["text"] for case in cases if ours.encode(case["text"]) != case["ids"]]
    if wrong:
        raise SystemExit(f"{len(wrong)} reference cases tokenize differently, e.g. {wrong[0]!r}")
    ours_ids, peer_ids = ours(captions, truncate=True), peer(captions)
    differing = [text for text, a, b in zip(captions, ours_ids, peer_ids) if not torch.equal(a, b)]
    explained = [text for text in differing if "<|" in text or set(text) & set("\x1c\x1d\x1e\x1f")]
    if len(explained) < len(differing):
        raise SystemExit(f"open_clip and clipforge differ on {sorted(set(differing) - set(explained))[:3]!r}")
    return differing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000,
                        help="captions of the built-in corpus, or generated ones without it (the shared cases are added)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes after one warm-up pass")
    parser.add_argument("--batch", type=int, default=256, help="captions per call")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(2)

    merges = openai_merges()
    cases = reference_cases()
    corpus, source = benchmark_captions(args.n)
    captions = corpus + [case["text"] for case in cases]
    simple_tokenizer = load_open_clip_tokenizer_module().SimpleTokenizer

    open_clip_wrong = check_ids(Tokenizer.from_openai_merges(merges), simple_tokenizer(str(merges)), cases, captions)
    print(f"ids equal the reference on {len(cases)} shared cases, and open_clip's on "
          f"{len(captions) - len(open_clip_wrong)} of {len(captions)} captions; open_clip departs from the "
          f"reference on {open_clip_wrong!r}")

    ours = Tokenizer.from_openai_merges(merges)
    contenders = {"clipforge": lambda texts: ours(texts, truncate=True), "open_clip": simple_tokenizer(str(merges))}
    warm_up = {name: captions_per_second(fn, captions, args.batch) for name, fn in contenders.items()}
    passes = {name: [] for name in contenders}
    for _ in range(args.repeats):
        for name, fn in contenders.items():
            passes[name].append(captions_per_second(fn, captions, args.batch))
    median = {name: statistics.median(rates) for name, rates in passes.items()}
    ratio = median["clipforge"] / median["open_clip"]
    warm_up_ratio = warm_up["clipforge"] / warm_up["open_clip"]

    print(f"\n{len(captions)} captions ({source}, plus the shared cases), batches of {args.batch}, torch threads {torch.get_num_threads()}")
    print(f"{'captions/s':<12}{'warm-up pass':>14}{'median of ' + str(args.repeats):>14}")
    for name in contenders:
        print(f"{name:<12}{warm_up[name]:>14,.0f}{median[name]:>14,.0f}")
    print(f"clipforge / open_clip: {ratio:.1f}x with warm caches (median), {warm_up_ratio:.1f}x on the "
          "warm-up pass (fresh tokenizers, empty caches; not in the median)")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "captions": len(captions), "caption_source": source, "batch": args.batch, "repeats": args.repeats,
        "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
        "open_clip_departs_from_reference_on": open_clip_wrong,
        "warm_up_captions_per_s": warm_up, "warm_captions_per_s": passes, "warm_median_captions_per_s": median,
        "warm_ratio": ratio, "warm_up_ratio": warm_up_ratio,
        "caches": "warm-up pass starts from empty word caches (construction excluded); timed passes find them full",
    }, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
