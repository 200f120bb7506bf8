"""A tiny CLIP trained in the test session on solid-colour images with captions like "a red
square", so that tests of zero-shot, search and the web app can expect a known top hit."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from PIL import Image, ImageDraw

from clipforge.training.config import TrainConfig
from clipforge.training.trainer import train

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 60, 220), "yellow": (240, 220, 30)}
MODEL = {"embed_dim": 32, "activation": "gelu",
         "vision": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "heads": 2},
         "text": {"context_length": 16, "vocab_size": 600, "width": 32, "layers": 2, "heads": 2}}


def colour_image(colour: str, variant: int = 0, size: int = 32) -> Image.Image:
    """A square of the colour on a grey background; the variant moves and resizes it a little."""
    image = Image.new("RGB", (size, size), (128, 128, 128))
    inset = 2 + variant % 5
    ImageDraw.Draw(image).rectangle([inset, inset + variant % 3, size - 3 - variant % 4, size - 3], fill=COLOURS[colour])
    return image


def write_colour_table(root: Path, per_colour: int = 24) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    with open(root / "pairs.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "caption"])
        for colour in COLOURS:
            for variant in range(per_colour):
                colour_image(colour, variant).save(root / "images" / f"{colour}_{variant}.png")
                writer.writerow([f"images/{colour}_{variant}.png", f"a {colour} square"])
    (root / "model.json").write_text(json.dumps(MODEL))
    return root / "pairs.csv"


def train_colour_model(root: Path) -> Path:
    """Trains for a few seconds and returns the saved model folder (loadable by clipforge.load)."""
    table = write_colour_table(root / "data")
    config = TrainConfig(model=str(root / "data" / "model.json"), vocab_size=600, train_data=[str(table)],
                         eval_data=[], steps=60, batch_size=32, lr=3e-3, warmup_steps=5, workers=0,
                         caption_choice="txt", output_dir=str(root / "run"), checkpoint_every=60,
                         eval_every=0, log_every=10, progress=False, precision="fp32", augment_shift=0)
    return train(config).model_dir
