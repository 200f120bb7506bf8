"""The check that evaluation stays evaluation: no picture of an evaluation set may also be a training
picture. Every set's pictures are PNGs written by the same encoder from RGB pixels (`encode_png`), so
equal pixels give equal bytes and a SHA-256 of the PNG bytes finds a copy in any set."""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..shard_writer import IMAGE_EXTENSIONS


def image_hashes(shard: Path) -> Iterator[tuple[str, str]]:
    """(sample key, SHA-256 of its image bytes) for each sample of one shard."""
    with tarfile.open(shard) as tar:
        for member in tar:
            key, _, extension = member.name.rpartition(".")
            if extension in IMAGE_EXTENSIONS and (data := tar.extractfile(member)) is not None:
                yield key, hashlib.sha256(data.read()).hexdigest()


def evaluation_overlap(data_dir: Path, sets: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """(training key, evaluation key) for every training picture equal to an evaluation picture, over the
    manifest's `sets`; empty when the splits are disjoint."""
    evaluation: dict[str, str] = {}
    for entry in (entry for entry in sets.values() if entry["split"] == "eval"):
        for shard in entry["shards"]:
            evaluation.update((digest, key) for key, digest in image_hashes(data_dir / shard["file"]))
    return [(key, evaluation[digest])
            for entry in sets.values() if entry["split"] == "train"
            for shard in entry["shards"]
            for key, digest in image_hashes(data_dir / shard["file"]) if digest in evaluation]
