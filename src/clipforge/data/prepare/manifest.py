"""The prepared-data manifest, `data_dir/manifest.json`: for each set, its source package, licence,
split, counts and shards with SHA-256 checksums, so a rerun can tell a finished set from a stale or
damaged one. It is rewritten atomically after every set, so finished sets survive a later failure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...core.atomic import write_atomically
from ...core.download import sha256_of

MANIFEST_NAME = "manifest.json"
FORMAT = 1


def load(data_dir: Path) -> dict[str, Any]:
    path = data_dir / MANIFEST_NAME
    if not path.is_file():
        return {"format": FORMAT, "sets": {}}
    return json.loads(path.read_text(encoding="utf-8"))


def save(data_dir: Path, manifest: dict[str, Any]) -> None:
    text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    write_atomically(data_dir / MANIFEST_NAME, lambda partial: partial.write_text(text, encoding="utf-8"))


def shard_records(shards: list[Path], data_dir: Path) -> list[dict[str, Any]]:
    """`{"file": path relative to data_dir, "sha256": ..., "bytes": ...}` for each shard."""
    return [{"file": shard.relative_to(data_dir).as_posix(), "sha256": sha256_of(shard), "bytes": shard.stat().st_size}
            for shard in shards]


def is_current(entry: dict[str, Any] | None, data_dir: Path, expected: dict[str, Any]) -> bool:
    """Whether `entry` was built with the `expected` fields (package, rules) and every shard on disk
    still has its recorded checksum."""
    if not entry or any(entry.get(field) != value for field, value in expected.items()):
        return False
    return all((data_dir / shard["file"]).is_file() and sha256_of(data_dir / shard["file"]) == shard["sha256"]
               for shard in entry["shards"])
