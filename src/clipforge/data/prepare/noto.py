"""Noto Color Emoji training pairs: every fully-qualified emoji the `emoji` package lists, skin tones
included, drawn from Debian's `fonts-noto-color-emoji` with Pillow at the font's bitmap size (109) and
named from the `emoji` package. Held-out concepts are left out; emoji the font lacks are skipped."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, features

from .captions import captions_for
from .emoji_concepts import SKIN_TONES, admit_for_training, code_points, concept_id, fully_qualified
from .obtain import Package
from .pictures import BrokenPicture
from .source import Item, Listing, Source

FONT_PATH = Path("usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
FONT_SIZE = 109  # the size of the font's only bitmap strike; any other size is rejected by FreeType
ONE_GLYPH = "\N{GRINNING FACE}"


def list_items(root: Path) -> Listing:
    if not features.check("raqm"):
        raise RuntimeError("drawing emoji sequences (skin tones, flags, ZWJ) needs Pillow's raqm text layout, "
                           "which loads the system's FriBiDi library: install it (Debian: libfribidi0)")
    listing = Listing([])
    font = root / FONT_PATH
    if not font.is_file():
        raise FileNotFoundError(f"{font} is missing: the package is not laid out as expected")
    for info in fully_qualified():
        sequence = code_points(info.text.replace("\N{VARIATION SELECTOR-16}", ""))
        if not admit_for_training(sequence, listing):
            continue
        concept = concept_id(sequence)
        key = f"noto-{sequence.lower()}"
        meta = {"set": "noto", "name": info.name, "concept": concept, "sequence": code_points(info.text),
                "category": None, "skin_tone": any(point in SKIN_TONES for point in sequence.split("-")),
                "emoji_version": info.version, "captions": captions_for(key, info.name, "emoji", info.aliases)}
        listing.items.append(Item(key, (str(font), info.text), meta))
    return listing


def draw(glyph: tuple[str, str]) -> Image.Image:
    """Draw one emoji on a transparent square, refusing one the font has no single glyph for (it would
    show an empty box or fall apart into several glyphs)."""
    font_path, text = glyph
    font = _font(font_path)
    left, top, right, bottom = font.getbbox(text)
    if bottom <= top or font.getlength(text) > 1.05 * font.getlength(ONE_GLYPH):
        raise BrokenPicture("no single glyph in the font")
    side = max(right - left, bottom - top)
    image = Image.new("RGBA", (side, side), (255, 255, 255, 0))
    offset = ((side - (right - left)) // 2 - left, (side - (bottom - top)) // 2 - top)
    ImageDraw.Draw(image).text(offset, text, font=font, embedded_color=True)
    return image


@cache
def _font(path: str) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, FONT_SIZE)


SOURCE = Source("noto", Package("apt", "fonts-noto-color-emoji", "2.042-0+deb12u1"),
                "OFL-1.1 (font); Apache-2.0 (emoji images and tools)", "train", list_items, draw, "emoji")
