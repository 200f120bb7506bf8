"""The page's preset demo: eight simple drawings, each with its prompt, drawn in code so that no
image lives in git. Plain icons and emoji-like glyphs are what the built-in corpus teaches the
default model, so its matrix shows the matching diagonal (as do OpenAI's models)."""

from __future__ import annotations

import math
from collections.abc import Callable

from PIL import Image, ImageDraw

SIZE = 128
INK = (20, 20, 20)
STROKE = 10


def _canvas() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("RGB", (SIZE, SIZE), "white")
    return image, ImageDraw.Draw(image)


def heart() -> Image.Image:
    image, draw = _canvas()
    steps = [2 * math.pi * k / 200 for k in range(200)]
    outline = [(64 + 3.2 * 16 * math.sin(t) ** 3,
                60 - 3.2 * (13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)))
               for t in steps]
    draw.polygon(outline, fill=(220, 30, 40))
    return image


def star() -> Image.Image:
    image, draw = _canvas()
    corners = [(64 + radius * math.cos(math.pi * k / 5 - math.pi / 2), 64 + radius * math.sin(math.pi * k / 5 - math.pi / 2))
               for k, radius in zip(range(10), [52, 22] * 5)]
    draw.polygon(corners, fill=(250, 200, 20))
    return image


def square() -> Image.Image:
    image, draw = _canvas()
    draw.rectangle([26, 26, 102, 102], outline=INK, width=8)
    return image


def triangle() -> Image.Image:
    image, draw = _canvas()
    draw.polygon([(64, 20), (108, 100), (20, 100)], outline=INK, width=8)
    return image


def arrow_up() -> Image.Image:
    image, draw = _canvas()
    draw.line([(64, 108), (64, 28)], fill=INK, width=STROKE)
    draw.line([(30, 60), (64, 24), (98, 60)], fill=INK, width=STROKE, joint="curve")
    return image


def plus() -> Image.Image:
    image, draw = _canvas()
    draw.line([(64, 24), (64, 104)], fill=INK, width=12)
    draw.line([(24, 64), (104, 64)], fill=INK, width=12)
    return image


def check_mark() -> Image.Image:
    image, draw = _canvas()
    draw.line([(24, 68), (52, 96), (106, 36)], fill=INK, width=12, joint="curve")
    return image


def cross() -> Image.Image:
    image, draw = _canvas()
    draw.line([(30, 30), (98, 98)], fill=INK, width=12)
    draw.line([(98, 30), (30, 98)], fill=INK, width=12)
    return image


# prompt -> drawing, in matrix order: image i matches prompt i
DEMO: dict[str, Callable[[], Image.Image]] = {
    "heart icon": heart,
    "star icon": star,
    "square icon": square,
    "triangle icon": triangle,
    "arrow up icon": arrow_up,
    "plus icon": plus,
    "check mark icon": check_mark,
    "x icon": cross,
}


def demo_set() -> list[tuple[Image.Image, str]]:
    """(image, its matching prompt) pairs in matrix order."""
    return [(draw(), prompt) for prompt, draw in DEMO.items()]
