"""Image-text pairs in a folder tree: every image file with its caption in a same-named `.txt` beside it.

The listing is recursive and sorted, and passes over hidden files and folders (names starting with
'.', such as a set still being built). A `.txt` with no image beside it is listed too, as a sample
whose image is missing, so stray captions are counted rather than silently ignored.
"""

from __future__ import annotations

import os
from pathlib import Path

from clipforge.data.partition import MapSource
from clipforge.data.samples import IMAGE_EXTENSIONS, RawSample

IMAGE_SUFFIXES = tuple(f".{extension}" for extension in IMAGE_EXTENSIONS)


class FolderSource(MapSource):
    """The pairs under `root`; a sample's key is its image's path relative to `root`."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise NotADirectoryError(f"{self.root} is not a folder")
        images, captions = [], []
        for folder, subfolders, files in os.walk(self.root):
            subfolders[:] = [name for name in subfolders if not name.startswith(".")]
            relative = Path(folder).relative_to(self.root)
            for name in (name for name in files if not name.startswith(".")):
                suffix = os.path.splitext(name)[1].lower()
                if suffix in IMAGE_SUFFIXES:
                    images.append(relative / name)
                elif suffix == ".txt":
                    captions.append(relative / name)
        captioned = {image.with_suffix("") for image in images}
        orphans = [caption for caption in captions if caption.with_suffix("") not in captioned]
        self.entries: list[Path] = sorted(images + orphans)

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> RawSample:
        entry = self.entries[index]
        is_image = entry.suffix.lower() in IMAGE_SUFFIXES
        return RawSample(
            key=entry.as_posix(),
            image=self.root / entry if is_image else None,
            caption=self.root / entry.with_suffix(".txt"),
        )

    def __repr__(self) -> str:
        return f"FolderSource({str(self.root)!r}, {len(self)} entries)"
