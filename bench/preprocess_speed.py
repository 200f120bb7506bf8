"""Preprocessing speed of large JPEGs (photos straight from a camera), with and without draft decoding.

    python bench/preprocess_speed.py [--images 8] [--width 4000] [--height 3000] [--size 224] [--repeats 3]

`ImageTransform(size, jpeg_draft=True).batch` on paths decodes each JPEG at the smallest libjpeg scale that keeps both
sides at least twice the output (`ImageTransform.draft_size`); the baseline decodes every pixel
first (`load_image` without a draft size). Both produce the same tensor shape; the largest and mean
differences are printed in 0..255 levels. The photo-like test images (gradients, shapes, grain) are
written to a temporary folder. Writes bench/results/preprocess.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from clipforge.images import ImageTransform, load_image

RESULTS = Path(__file__).resolve().parent / "results" / "preprocess.json"


def write_photo(path: Path, width: int, height: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x / width, y / height, (x + y) / (width + height)], axis=-1) * 255
    image = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(150):
        left, top, size = rng.integers(0, width), rng.integers(0, height), rng.integers(10, width // 8)
        draw.ellipse([left, top, left + size, top + size], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    grain = np.asarray(image, dtype=np.float32) + rng.normal(0, 12, (height, width, 3))
    Image.fromarray(np.clip(grain, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.5)).save(path, quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    parser.add_argument("--size", type=int, default=224, help="the transform's output side")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    transform = ImageTransform(args.size, jpeg_draft=True)
    with tempfile.TemporaryDirectory() as folder:
        paths = [Path(folder) / f"photo-{i}.jpg" for i in range(args.images)]
        for seed, path in enumerate(paths):
            write_photo(path, args.width, args.height, seed)
        ways = {"full decode": lambda: torch.stack([transform(load_image(path)) for path in paths]),
                "draft decode": lambda: transform.batch(paths)}
        outputs = {way: run() for way, run in ways.items()}  # also the warm-up
        seconds = {way: [] for way in ways}
        for _ in range(args.repeats):
            for way, run in ways.items():
                start = time.perf_counter()
                run()
                seconds[way].append(time.perf_counter() - start)
    levels = (outputs["draft decode"] - outputs["full decode"]).abs() * torch.tensor(transform.std).view(3, 1, 1) * 255
    per_s = {way: args.images / statistics.median(values) for way, values in seconds.items()}
    print(f"{args.images} JPEGs of {args.width}x{args.height} -> {args.size}px, median of {args.repeats}")
    for way, rate in per_s.items():
        print(f"{way:<13}{rate:8.1f} images/s")
    print(f"draft / full: {per_s['draft decode'] / per_s['full decode']:.2f}x; difference in 0..255 levels: "
          f"mean {levels.mean():.2f}, largest {levels.max():.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"images": args.images, "width": args.width, "height": args.height,
                                    "size": args.size, "repeats": args.repeats, "images_per_s": per_s,
                                    "mean_difference_levels": levels.mean().item(),
                                    "max_difference_levels": levels.max().item()}, indent=2))


if __name__ == "__main__":
    main()
