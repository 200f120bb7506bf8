"""Composite scenes with known boxes, for measuring open-vocabulary localization: glyphs (images of
one object on a plain light background, as the prepared emoji and icon sets are) cut out and pasted
at random sizes and positions, without overlapping, on plain or textured canvases.

Seeded like the shapes data: scene ``i`` is drawn from ``default_rng([seed, i])``, so the same seed
and glyphs give the same scenes, and any one scene can be made alone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

BACKGROUNDS = ("plain", "noise", "stripes", "checker", "gradient")
BACKGROUND_TOLERANCE = 24  # 0..255 levels from the border's colour that still count as background
PLACEMENT_TRIES = 200


@dataclass(frozen=True)
class SceneObject:
    """A pasted glyph: its name and its tight box (x0, y0 inclusive; x1, y1 exclusive), in pixels."""

    name: str
    box: tuple[int, int, int, int]

    @property
    def area(self) -> int:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])


@dataclass
class Scene:
    image: Image.Image  # RGB, canvas x canvas
    objects: list[SceneObject]
    background: str  # one of BACKGROUNDS


def cut_out(image: Image.Image, tolerance: int = BACKGROUND_TOLERANCE) -> Image.Image:
    """The glyph of an image on a plain background, as RGBA cropped to it: the background is the
    region of the border's colour (within `tolerance`) connected to the border, so light parts inside
    the glyph's outline (eyes, highlights) stay opaque. Raises ValueError when nothing is left."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    colour = np.median(border, axis=0)
    near = np.abs(rgb - colour).max(axis=-1) <= tolerance
    # copied: an image made by fromarray may share the array's read-only memory, and floodfill would not write
    padded = Image.fromarray(np.pad(near.astype(np.uint8) * 255, 1, constant_values=255)).copy()
    ImageDraw.floodfill(padded, (0, 0), 128)
    alpha = np.where(np.asarray(padded)[1:-1, 1:-1] == 128, 0, 255).astype(np.uint8)
    if not alpha.any():
        raise ValueError("the image has no glyph: every pixel is its background's colour")
    cut = Image.fromarray(np.dstack([rgb.astype(np.uint8), alpha]), "RGBA")
    return cut.crop(cut.getbbox())


def background(kind: str, canvas: int, rng: np.random.Generator) -> Image.Image:
    """A canvas x canvas RGB background of a kind in BACKGROUNDS, its colours drawn from `rng`."""
    first, second = (rng.integers(40, 256, size=3) for _ in range(2))
    if kind == "plain":
        return Image.new("RGB", (canvas, canvas), tuple(int(c) for c in first))
    y, x = np.mgrid[0:canvas, 0:canvas]
    if kind == "noise":
        amount = rng.uniform(0.3, 1.0)
        mix = rng.random((canvas, canvas, 1)) * amount
    elif kind == "stripes":
        period, angle = rng.uniform(6, 24), rng.uniform(0, np.pi)
        mix = ((x * np.cos(angle) + y * np.sin(angle)) // (period / 2) % 2)[..., None]
    elif kind == "checker":
        cell = int(rng.integers(6, 24))
        mix = ((x // cell + y // cell) % 2)[..., None]
    elif kind == "gradient":
        angle = rng.uniform(0, 2 * np.pi)
        ramp = x * np.cos(angle) + y * np.sin(angle)
        mix = ((ramp - ramp.min()) / max(np.ptp(ramp), 1))[..., None]
    else:
        raise ValueError(f"unknown background {kind!r}; expected one of {', '.join(BACKGROUNDS)}")
    pixels = first * (1 - mix) + second * mix
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _overlaps(box: tuple[int, int, int, int], others: Sequence[tuple[int, int, int, int]], gap: int) -> bool:
    return any(box[0] < o[2] + gap and o[0] < box[2] + gap and box[1] < o[3] + gap and o[1] < box[3] + gap
               for o in others)


def compose_scene(glyphs: Sequence[tuple[Image.Image, str]], rng: np.random.Generator, canvas: int = 128,
                  objects: tuple[int, int] = (2, 4), sizes: tuple[float, float] = (0.22, 0.45),
                  backgrounds: Sequence[str] = BACKGROUNDS, gap: int = 2) -> Scene:
    """One scene: between objects[0] and objects[1] glyphs of distinct names (cut-outs, RGBA, as
    `cut_out` gives), each scaled so its longer side is a fraction in `sizes` of the canvas, placed
    uniformly where it does not come within `gap` pixels of another; a glyph that finds no room after
    `PLACEMENT_TRIES` tries shrinks and tries again."""
    names = sorted({name for _, name in glyphs})
    if len(names) < objects[1] or not 1 <= objects[0] <= objects[1]:
        raise ValueError(f"scenes of {objects[0]} to {objects[1]} objects need at least {objects[1]} "
                         f"distinct names, got {len(names)}")
    by_name: dict[str, list[Image.Image]] = {}
    for glyph, name in glyphs:
        by_name.setdefault(name, []).append(glyph)
    kind = str(backgrounds[int(rng.integers(len(backgrounds)))])
    image = background(kind, canvas, rng)
    count = int(rng.integers(objects[0], objects[1] + 1))
    chosen = [names[i] for i in rng.choice(len(names), size=count, replace=False)]
    placed: list[SceneObject] = []
    for name in chosen:
        options = by_name[name]
        glyph = options[int(rng.integers(len(options)))]
        fraction = rng.uniform(*sizes)
        while True:
            scale = fraction * canvas / max(glyph.size)
            width, height = max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale))
            for _ in range(PLACEMENT_TRIES):
                x, y = int(rng.integers(0, canvas - width + 1)), int(rng.integers(0, canvas - height + 1))
                box = (x, y, x + width, y + height)
                if not _overlaps(box, [o.box for o in placed], gap):
                    break
            else:
                fraction *= 0.8
                continue
            break
        pasted = glyph.resize((width, height), Image.Resampling.BICUBIC)
        image.paste(pasted, (x, y), pasted)
        placed.append(SceneObject(name, box))
    return Scene(image, placed, kind)


def compose_scenes(glyphs: Sequence[tuple[Image.Image, str]], count: int, seed: int = 0, **options) -> list[Scene]:
    """`count` scenes, scene i from `default_rng([seed, i])`; `options` as `compose_scene` takes them."""
    return [compose_scene(glyphs, np.random.default_rng([seed, index]), **options) for index in range(count)]
