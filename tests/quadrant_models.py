"""Tiny CLIPs of each image tower, trained in the test session (seconds each) on one coloured
square at a random place and size on grey, captioned "a red square" and so on, so that a
localization test knows where each colour is: `quadrant_scene` puts the four colours in the four
quadrants."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from clipforge.images import ImageTransform
from clipforge.models import CLIP, create_model
from colour_model import COLOURS

GREY = (128, 128, 128)
NGRAM_TEXT = {"kind": "ngram_bag", "tokenizer": "ngram", "context_length": 32, "vocab_size": 512, "width": 32}
TOWERS = {  # image size 32 (64 for the ResNet, whose grid is size / 32): 4x4, 2x2 and 8x8 cells
    "vit": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "heads": 2},
    "resnet": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "heads": 2},
    "convnet": {"image_size": 32, "channels": [8, 16, 32]},
}
PROMPTS = [f"a {colour} square" for colour in COLOURS]


def square_image(colour: str, size: int, generator: torch.Generator) -> Image.Image:
    """One square of the colour, its side 30-80 % of the image's, anywhere inside it, on grey."""
    side = int(size * (0.3 + 0.5 * torch.rand((), generator=generator)))
    x, y = (int(v) for v in torch.randint(0, size - side + 1, (2,), generator=generator))
    image = Image.new("RGB", (size, size), GREY)
    ImageDraw.Draw(image).rectangle([x, y, x + side - 1, y + side - 1], fill=COLOURS[colour])
    return image


def quadrant_scene(order: list[str], size: int) -> Image.Image:
    """The colours of `order` in the top-left, top-right, bottom-left and bottom-right quadrants, each
    a square of 0.4 * size centred in its quadrant, on grey."""
    image = Image.new("RGB", (size, size), GREY)
    draw = ImageDraw.Draw(image)
    half, side = size // 2, int(0.4 * size)
    for index, colour in enumerate(order):
        left = (index % 2) * half + (half - side) // 2
        top = (index // 2) * half + (half - side) // 2
        draw.rectangle([left, top, left + side - 1, top + side - 1], fill=COLOURS[colour])
    return image


def quadrant_of(point: tuple[int, int], size: int) -> int:
    """0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right."""
    return int(point[0] >= size // 2) + 2 * int(point[1] >= size // 2)


def train_quadrant_model(tower: str, steps: int = 120, batch_size: int = 32, seed: int = 0) -> CLIP:
    """A model of the tower trained on `square_image`s against the four colour prompts: each image's
    logits over the prompts at the model's temperature, cross-entropy with its colour."""
    torch.manual_seed(seed)
    model = create_model({"embed_dim": 32, "activation": "gelu", "vision": TOWERS[tower], "text": NGRAM_TEXT}).train()
    size = model.image_size
    transform = ImageTransform(size)
    generator = torch.Generator().manual_seed(seed)
    tokens = model.tokenize(PROMPTS)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    colours = list(COLOURS)
    for _ in range(steps):
        labels = torch.randint(0, len(colours), (batch_size,), generator=generator)
        pixels = torch.stack([transform(square_image(colours[label], size, generator)) for label in labels.tolist()])
        image = model.encode_image(pixels, normalize=True)
        text = model.encode_text(tokens, normalize=True)
        loss = F.cross_entropy(model.logit_scale_exp() * image @ text.t(), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.clamp_logit_scale_()
    return model.eval()
