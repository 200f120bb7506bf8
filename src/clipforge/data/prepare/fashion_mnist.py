"""Fashion-MNIST evaluation set (never trained on) for 10-way zero-shot classification: the 10,000-image
test split from Debian's `dataset-fashion-mnist`.

Presentation rule: each 28 × 28 grey image is inverted (255 - value) so the garment is dark on white
like the training art, upscaled to `SIDE` × `SIDE` with bicubic resampling, and stored as RGB.
The classes, in label order, are `CLASS_NAMES` (the dataset's own names, "T-shirt/top" shortened to
"t-shirt"); the label is the json's `class_id`.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .captions import captions_for
from .obtain import Package
from .source import Item, Listing, Source

FOLDER = Path("usr/share/datasets/fashion-mnist")
CLASS_NAMES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
ALIASES = {"t-shirt": ["top", "tee"], "sneaker": ["trainer"], "bag": ["handbag"]}
SIDE = 64
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An idx file (optionally gzipped) as a uint8 array: `[count, rows, cols]` images or `[count]` labels."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as handle:
        data = handle.read()
    header = np.frombuffer(data[:4], ">u4")[0]
    if header != magic:
        raise ValueError(f"{path} starts with magic {header}, expected {magic}")
    dims = data[3]
    shape = tuple(int(size) for size in np.frombuffer(data[4 : 4 + 4 * dims], ">u4"))
    return np.frombuffer(data[4 + 4 * dims :], np.uint8).reshape(shape)


def list_items(root: Path) -> Listing:
    images = read_idx(root / FOLDER / "t10k-images-idx3-ubyte.gz", IMAGES_MAGIC)
    labels = read_idx(root / FOLDER / "t10k-labels-idx1-ubyte.gz", LABELS_MAGIC)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} test images but {len(labels)} labels")
    items = []
    for index, (pixels, label) in enumerate(zip(images, labels)):
        key, name = f"fashion-mnist-{index:05d}", CLASS_NAMES[label]
        meta = {"set": "fashion-mnist", "name": name, "class_id": int(label), "index": index,
                "captions": captions_for(key, name, "photo", ALIASES.get(name, ()))}
        items.append(Item(key, pixels, meta))
    return Listing(items)


def draw(pixels: np.ndarray) -> Image.Image:
    inverted = ImageOps.invert(Image.fromarray(pixels, "L"))
    return inverted.resize((SIDE, SIDE), Image.Resampling.BICUBIC).convert("RGB")


SOURCE = Source("fashion-mnist", Package("apt", "dataset-fashion-mnist", "0.0~git20200523.55506a9-1"), "MIT",
                "eval", list_items, draw, "photo")
