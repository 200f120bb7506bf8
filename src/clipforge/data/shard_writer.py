"""Writing image-text pairs as WebDataset tar shards in the img2dataset layout:
`key.<ext>` image bytes, `key.txt` caption, optional `key.json` metadata.

Each shard is written under a temporary name and renamed when complete, so a crash never leaves a
truncated shard that a reader would take for a whole one.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


class ShardWriter:
    """`with ShardWriter(out, shard_size=1000) as writer: writer.write(key, png_bytes, "png", caption)`."""

    def __init__(self, out_dir: str | os.PathLike, shard_size: int = 1000, prefix: str = "shard"):
        if shard_size < 1:
            raise ValueError(f"shard_size must be at least 1, got {shard_size}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.shard_size = shard_size
        self.prefix = prefix
        self.shards: list[Path] = []
        self.count = 0
        self._tar: tarfile.TarFile | None = None
        self._partial: Path | None = None
        self._in_shard = 0

    def write(self, key: str, image: bytes, image_ext: str, caption: str, meta: dict[str, Any] | None = None) -> None:
        if image_ext not in IMAGE_EXTENSIONS:
            raise ValueError(f"image extension {image_ext!r} is not one of {IMAGE_EXTENSIONS}")
        if "." in key or "/" in key:
            raise ValueError(f"a sample key may not contain '.' or '/': {key!r}")
        if self._tar is None:
            self._open_next()
        members = [(f"{key}.{image_ext}", image), (f"{key}.txt", caption.encode("utf-8"))]
        if meta is not None:
            members.append((f"{key}.json", json.dumps(meta, ensure_ascii=False).encode("utf-8")))
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o444, 0
            self._tar.addfile(info, io.BytesIO(data))
        self.count += 1
        self._in_shard += 1
        if self._in_shard >= self.shard_size:
            self._finish_shard()

    def _open_next(self) -> None:
        final = self.out_dir / f"{self.prefix}-{len(self.shards):06d}.tar"
        self._partial = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        self._tar = tarfile.open(self._partial, "w")
        self._in_shard = 0

    def _finish_shard(self) -> None:
        self._tar.close()
        final = self.out_dir / f"{self.prefix}-{len(self.shards):06d}.tar"
        os.replace(self._partial, final)
        self.shards.append(final)
        self._tar = self._partial = None

    def close(self) -> list[Path]:
        if self._tar is not None:
            self._finish_shard()
        return self.shards

    def abort(self) -> None:
        """Drop the shard in progress (completed shards stay)."""
        if self._tar is not None:
            self._tar.close()
            self._partial.unlink(missing_ok=True)
            self._tar = self._partial = None

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()
