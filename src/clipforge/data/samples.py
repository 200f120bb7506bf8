"""What a source yields, `RawSample` (bytes or paths, unchecked), and the checks that turn it into a
`Sample` (decoded image, clean caption, metadata dict) or raise `SampleError` with the reason.

Checks run cheapest first (caption, metadata, then the image), so a bad caption costs no decoding, and
an image's pixel count is checked from its header before any pixel is decoded.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from clipforge.data.skips import SampleError, SkipReason

DEFAULT_MAX_PIXELS = 64 * 1024 * 1024
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff")


@dataclass(frozen=True)
class RawSample:
    """One image-text pair as its source found it.

    `image`: the file's bytes, or its path (read when checked), None when there is none. `caption`: the
    `.txt` bytes, a table's text, or a path. `meta`: a shard's `.json` bytes or a table's other columns.
    `problem`: a `SkipReason` the source already knows (a malformed row, an unreadable shard).
    """

    key: str
    image: bytes | Path | None = None
    caption: bytes | str | Path | None = None
    meta: bytes | dict[str, Any] | None = None
    problem: str | None = None


@dataclass(frozen=True)
class Sample:
    """A checked pair: `image` fully decoded in its file's mode, `image_bytes` the file as it came."""

    key: str
    image: Image.Image
    image_bytes: bytes
    caption: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def alternative_captions(self) -> list[str]:
        return alternative_captions(self.meta)


def alternative_captions(meta: dict[str, Any]) -> list[str]:
    """The usable strings of the metadata's `"captions"` list (img2dataset-style extra captions), stripped."""
    captions = meta.get("captions")
    if not isinstance(captions, list):
        return []
    return [text.strip() for text in captions if isinstance(text, str) and text.strip()]


def check_sample(raw: RawSample, max_pixels: int = DEFAULT_MAX_PIXELS) -> Sample:
    """`raw` checked and decoded; raises `SampleError` naming the first thing wrong with it."""
    caption, meta, data = check_fields(raw)
    return Sample(raw.key, decode_image(data, max_pixels), data, caption, meta)


def check_fields(raw: RawSample) -> tuple[str, dict[str, Any], bytes]:
    """(caption, metadata, image bytes): every check of `check_sample` but decoding the image."""
    if raw.problem is not None:
        raise SampleError(raw.problem)
    caption = read_caption(raw.caption)
    meta = read_metadata(raw.meta)
    return caption, meta, _read_bytes(raw.image, missing=SkipReason.IMAGE_MISSING)


def read_caption(caption: bytes | str | Path | None) -> str:
    """The caption, stripped; it must exist, be UTF-8 and hold more than whitespace."""
    if isinstance(caption, str):
        text = caption
        try:  # tables are read with surrogateescape, which keeps undecodable bytes as lone surrogates
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise SampleError(SkipReason.CAPTION_NOT_UTF8, str(error)) from None
    else:
        try:
            text = _read_bytes(caption, missing=SkipReason.CAPTION_MISSING).decode("utf-8")
        except UnicodeDecodeError as error:
            raise SampleError(SkipReason.CAPTION_NOT_UTF8, str(error)) from None
    text = text.strip()
    if not text:
        raise SampleError(SkipReason.CAPTION_EMPTY)
    return text


def read_metadata(meta: bytes | dict[str, Any] | None) -> dict[str, Any]:
    """The metadata as a dict (empty when there is none); JSON that is not an object is corrupt."""
    if meta is None:
        return {}
    if isinstance(meta, dict):
        return meta
    try:
        meta = json.loads(meta)
    except (ValueError, RecursionError) as error:
        raise SampleError(SkipReason.METADATA_CORRUPT, str(error)) from None
    if not isinstance(meta, dict):
        raise SampleError(SkipReason.METADATA_CORRUPT, f"a JSON {type(meta).__name__}, not an object")
    return meta


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Fully decode `data`, refusing images of more than `max_pixels` from their header alone.

    Decoders raise many kinds of exceptions on damaged bytes (OSError, SyntaxError, struct.error,
    IndexError, ...); every one of them means this file is bad, so every one becomes a `SampleError`.
    """
    if not data:
        raise SampleError(SkipReason.IMAGE_EMPTY)
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as error:
        raise SampleError(SkipReason.IMAGE_TOO_LARGE, str(error)) from None
    except Exception as error:  # noqa: BLE001 - see the docstring
        raise SampleError(SkipReason.NOT_AN_IMAGE, str(error)) from None
    if image.width * image.height > max_pixels:
        raise SampleError(SkipReason.IMAGE_TOO_LARGE, f"{image.width}x{image.height} > {max_pixels} pixels")
    try:
        image.load()
    except Exception as error:  # noqa: BLE001 - see the docstring
        raise SampleError(SkipReason.IMAGE_CORRUPT, str(error)) from None
    return image


def _read_bytes(value: bytes | Path | None, missing: str) -> bytes:
    if value is None:
        raise SampleError(missing)
    if isinstance(value, bytes):
        return value
    try:
        return Path(value).read_bytes()
    except FileNotFoundError:
        raise SampleError(missing, str(value)) from None
    except OSError as error:
        raise SampleError(SkipReason.FILE_UNREADABLE, str(error)) from None
