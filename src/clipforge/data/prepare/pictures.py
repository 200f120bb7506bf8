"""Turning source art into the shards' picture format: an RGB PNG on white whose longest side is at most
`MAX_SIDE` pixels (smaller sources keep their size), so every set looks alike to the image tower."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from ...core.extras import require

MAX_SIDE = 128


class BrokenPicture(ValueError):
    """A picture that cannot be used; its message is the reason counted in the manifest."""


def on_white(image: Image.Image) -> Image.Image:
    """Composite any transparency onto white and return an RGB image."""
    rgba = image.convert("RGBA")
    flat = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    flat.alpha_composite(rgba)
    return flat.convert("RGB")


def encode_png(image: Image.Image) -> bytes:
    """RGB-on-white PNG bytes, shrunk (never enlarged) to fit `MAX_SIDE`; a blank picture is refused,
    since an all-white sample teaches nothing."""
    picture = on_white(image)
    if max(picture.size) > MAX_SIDE:
        picture.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    if picture.convert("L").getextrema() == (255, 255):
        raise BrokenPicture("blank picture")
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


def render_svg(svg: Path | str) -> Image.Image:
    """Rasterise an SVG file (a path) or SVG markup (a string) on white at `MAX_SIDE` × `MAX_SIDE`
    (aspect kept by the SVG's own rules)."""
    cairosvg = require("cairosvg", "data", "data preparation")
    source = {"url": str(svg)} if isinstance(svg, Path) else {"bytestring": svg.encode("utf-8")}
    png = cairosvg.svg2png(**source, output_width=MAX_SIDE, output_height=MAX_SIDE, background_color="white")
    return Image.open(io.BytesIO(png))
