"""`open_source`: any supported source by its path, the kind told from the path itself."""

from __future__ import annotations

import os
from pathlib import Path

from clipforge.data.folder import FolderSource
from clipforge.data.shards import ShardSource, ShardSpec, expand_shards
from clipforge.data.table import TABLE_SUFFIXES, TableSource

Source = TableSource | FolderSource | ShardSource


def open_source(path: ShardSpec | Source, **options) -> Source:
    """A table for `.csv` / `.tsv` / `.jsonl`; shards for a `.tar` path, a brace pattern, a list of
    those, or a folder holding `.tar` files (at any depth); otherwise a folder of images.

    Iterating the result gives every `RawSample` once, in order. `options` go to the source's class
    (`image_column=`, `caption_column=` for tables; `resampled=`, `samples_per_epoch=` for shards).
    An already open source is returned as it is.
    """
    if isinstance(path, (TableSource, FolderSource, ShardSource)):
        if options:
            raise TypeError(f"options {sorted(options)} apply when opening a path, not to an open source")
        return path
    if not isinstance(path, (str, os.PathLike)):
        return ShardSource(path, **options)
    if Path(path).suffix.lower() in TABLE_SUFFIXES:
        return TableSource(path, **options)
    if Path(path).is_dir() and not expand_shards(path):
        return FolderSource(path, **options)
    return ShardSource(path, **options)
