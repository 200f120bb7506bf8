"""The image files under an index's roots, and a dataset that reads, hashes, decodes and preprocesses
them in DataLoader workers.

The training loader (`clipforge.data.loader`) does not fit here: it reads image-text pairs (a missing
caption skips the sample), deals a seeded permutation to ranks with the remainder left out, and its
batches do not say which file each image came from. The listing rules (recursive, hidden files and
folders passed over, the image suffixes) and the checks and skip reasons are the data package's own.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from PIL import Image
from torch.utils.data import Dataset

from clipforge.data.folder import IMAGE_SUFFIXES, FolderSource
from clipforge.data.samples import DEFAULT_MAX_PIXELS, decode_image
from clipforge.data.skips import SampleError, SkipReason


@dataclass(frozen=True)
class ImageFile:
    """A listed image: absolute path, and its size and mtime when listed (-1, 0 if it cannot be stat'ed)."""

    path: str
    size: int
    mtime_ns: int


def resolve_roots(roots: Sequence[str | os.PathLike]) -> list[Path]:
    """The folders as absolute real paths, without repeats; a root that is not a folder is an error."""
    if not roots:
        raise ValueError("give at least one folder to index")
    resolved: list[Path] = []
    for root in roots:
        path = Path(root).expanduser().resolve()
        if not path.exists():
            raise FileNotFoundError(f"{root} does not exist")
        if not path.is_dir():
            raise ValueError(f"{root} is not a folder")
        if path not in resolved:
            resolved.append(path)
    return resolved


def list_images(roots: Sequence[Path]) -> list[ImageFile]:
    """Every image file under the (resolved) `roots`, once each, sorted by path."""
    found: dict[str, ImageFile] = {}
    for root in roots:
        for entry in FolderSource(root).entries:
            if entry.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            path = str(root / entry)
            try:
                stat = os.stat(path)
                found[path] = ImageFile(path, stat.st_size, stat.st_mtime_ns)
            except OSError:  # a broken link, say: reading it will say why it is skipped
                found[path] = ImageFile(path, -1, 0)
    return [found[path] for path in sorted(found)]


class LoadedImage(NamedTuple):
    """One file's outcome: `problem` is a `SkipReason`, else `embed` says whether it has pixels (it
    has none when its content is the one already indexed)."""

    position: int
    sha256: str
    problem: str | None
    embed: bool


class LoadedBatch(NamedTuple):
    images: list[LoadedImage]
    pixels: torch.Tensor | None  # [images to embed, 3, S, S] float32, in order


class ImageFileDataset(Dataset):
    """Item `i` is `(LoadedImage, pixels [3, S, S] or None)` for `files[i]`; `known_hashes` maps a
    path to the content hash already indexed, so a file that was only touched is not embedded again."""

    def __init__(self, files: Sequence[ImageFile], transform: Callable[[Image.Image], torch.Tensor],
                 known_hashes: Mapping[str, str] | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.files = files
        self.transform = transform
        self.known_hashes = known_hashes or {}
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, position: int) -> tuple[LoadedImage, torch.Tensor | None]:
        path = self.files[position].path
        try:
            data = read_file(path)
            sha256 = hashlib.sha256(data).hexdigest()
            if self.known_hashes.get(path) == sha256:
                return LoadedImage(position, sha256, None, False), None
            image = decode_image(data, self.max_pixels)
            try:
                pixels = self.transform(image)
            except Exception as error:  # noqa: BLE001 - a decodable file the transform cannot take is still just one bad file
                raise SampleError(SkipReason.IMAGE_CORRUPT, str(error)) from None
        except SampleError as error:
            return LoadedImage(position, "", error.reason, False), None
        return LoadedImage(position, sha256, None, True), pixels


def read_file(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise SampleError(SkipReason.IMAGE_MISSING, path) from None
    except OSError as error:
        raise SampleError(SkipReason.FILE_UNREADABLE, str(error)) from None


def collate_loaded(items: Sequence[tuple[LoadedImage, torch.Tensor | None]]) -> LoadedBatch:
    """Runs in the worker, so only one stacked tensor crosses to the main process."""
    pixels = [tensor for _, tensor in items if tensor is not None]
    return LoadedBatch([image for image, _ in items], torch.stack(pixels) if pixels else None)
