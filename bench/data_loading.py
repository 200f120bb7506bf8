"""Data-loader throughput (samples/s) on WebDataset shards with 0, 1 and 2 workers, through the whole
training pipeline: read the tar, decode, `ImageTransform` at 64 px, tokenize with CLIP's BPE, batch.

    python bench/data_loading.py [PATH] [--samples 2000] [--batch 64] [--repeats 3]

PATH defaults to the prepared built-in corpus (`$CLIPFORGE_DATA`, else ~/.cache/clipforge/data) when
it holds shards; otherwise 2,000 random PNG pairs (smooth blobs of 96 to 192 px, like small photos,
not incompressible noise) are generated into a temporary folder. The first shards holding `--samples`
samples are read. Each timed pass is one whole epoch, worker start-up included; the median over
`--repeats` passes is reported. Writes bench/results/data_loading.json.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from clipforge.data import ShardSource, ShardWriter, make_loader
from clipforge.data.prepare import default_data_dir
from clipforge.data.shards import count_samples, expand_shards
from clipforge.images import ImageTransform
from clipforge.text import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "data_loading.json"
WORKERS = (0, 1, 2)
WORDS = ("a photo of the small red blue green dog cat bicycle car tree house on in near with under "
         "bright dark old new wooden field street beach snow at night sunset").split()


def generate_pairs(folder: Path, count: int, shard_size: int = 500) -> None:
    """`count` PNG pairs: bicubic-upsampled 6x6 noise at random sizes, captions of 4 to 16 words."""
    rng = np.random.default_rng(0)
    with ShardWriter(folder, shard_size) as writer:
        for i in range(count):
            width, height = rng.integers(96, 193, size=2)
            seed = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
            image = seed.resize((int(width), int(height)), Image.Resampling.BICUBIC)
            buffer = io.BytesIO()
            image.save(buffer, "PNG")
            caption = " ".join(rng.choice(WORDS, size=rng.integers(4, 17)))
            writer.write(f"{i:09d}", buffer.getvalue(), "png", caption)


def first_shards(path: Path, samples: int) -> list[Path]:
    """The sorted shards under `path` up to the first that brings the total to `samples`."""
    chosen, total = [], 0
    for shard in expand_shards(path):
        if total >= samples:
            break
        chosen.append(shard)
        total += count_samples(shard)
    return chosen


def epoch_rate(source: ShardSource, tokenizer: Tokenizer, batch: int, workers: int) -> tuple[float, int]:
    """(samples/s, samples) of one full epoch."""
    loader = make_loader(source, ImageTransform(64), tokenizer, batch, num_workers=workers)
    start = time.perf_counter()
    delivered = sum(len(images) for images, _ in loader)
    return delivered / (time.perf_counter() - start), delivered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", type=Path, help="a folder of shards (default: the built-in corpus)")
    parser.add_argument("--samples", type=int, default=2000, help="read the first shards holding this many")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per worker count")
    args = parser.parse_args()
    torch.set_num_threads(1)

    tokenizer = Tokenizer.openai()
    with tempfile.TemporaryDirectory() as scratch:
        path = args.path or default_data_dir()
        label = str(path)
        if args.path is None and not (path.is_dir() and expand_shards(path)):
            path, label = Path(scratch), f"{args.samples} generated PNG pairs"
            generate_pairs(path, args.samples)
        source = ShardSource(first_shards(path, args.samples))
        rates: dict[int, list[float]] = {}
        for workers in WORKERS:
            epoch_rate(source, tokenizer, args.batch, workers)  # warm-up: file cache, tokenizer cache
            runs = [epoch_rate(source, tokenizer, args.batch, workers) for _ in range(args.repeats)]
            rates[workers] = [rate for rate, _ in runs]
            samples = runs[0][1]

    median = {workers: statistics.median(values) for workers, values in rates.items()}
    print(f"\n{samples} samples from {len(source.shards)} shards of {label}; batch {args.batch}, 64 px, "
          f"{os.cpu_count()} CPUs, medians of {args.repeats} epochs\n")
    print("| workers | samples/s | vs 0 workers |\n|---:|---:|---:|")
    for workers in WORKERS:
        print(f"| {workers} | {median[workers]:,.0f} | {median[workers] / median[0]:.2f}x |")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "data": label,
        "samples": samples, "shards": len(source.shards), "batch": args.batch, "image_size": 64,
        "repeats": args.repeats, "cpus": os.cpu_count(), "torch": torch.__version__,
        "python": platform.python_version(),
        "samples_per_s": {str(w): values for w, values in rates.items()},
        "median_samples_per_s": {str(w): value for w, value in median.items()},
    }, indent=2))
    print(f"\nwrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
