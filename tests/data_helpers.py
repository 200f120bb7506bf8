"""Small generated images and tars, and a tokenizer whose tokens read back as the caption, for the data tests."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def noise_image(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """Random pixels in any 8-bit mode (the RGB noise converted), so equal pixels mean the same image."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels).convert(mode)


def encode(image: Image.Image, image_format: str = "PNG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **params)
    return buffer.getvalue()


def write_tar(path: Path, members: Iterable[tuple[str, bytes]]) -> Path:
    """A tar of exactly these members, in order: for shards no ShardWriter would write."""
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


class CharTokenizer:
    """Code points padded with zeros: `[len(texts), context_length]` int64, readable back with `decode`."""

    def __call__(self, texts: list[str], context_length: int, truncate: bool = False) -> torch.Tensor:
        rows = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in zip(rows, texts, strict=True):
            codes = [ord(character) for character in text][:context_length]
            row[: len(codes)] = torch.tensor(codes, dtype=torch.long)
        return rows

    @staticmethod
    def decode(tokens: torch.Tensor) -> list[str]:
        return ["".join(chr(code) for code in row.tolist() if code) for row in tokens]
