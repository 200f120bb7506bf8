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


def summary(record: dict[str, Any]) -> str:
    """One screen about a prepared folder: a line per set (split, samples, skipped, seconds, built now or
    already done), the totals per split, and the evaluation-overlap check of the last run."""
    run = record.get("last_run", {})
    built = set(run.get("built", []))
    lines = [f"{'set':<20} {'split':<5} {'samples':>8} {'skipped':>8} {'seconds':>8}  status"]
    for name, entry in record["sets"].items():
        seconds = sum(entry.get("seconds", {}).values())
        status = "built" if name in built else "up to date"
        lines.append(f"{name:<20} {entry['split']:<5} {entry['samples']:>8,} {entry['skipped']:>8,} {seconds:>8.1f}  {status}")
    for name in run.get("failed", []):
        lines.append(f"{name:<20} {'':<5} {'':>8} {'':>8} {'':>8}  FAILED")
    for split in ("train", "eval"):
        entries = [entry for entry in record["sets"].values() if entry["split"] == split]
        lines.append(f"{split}: {sum(entry['samples'] for entry in entries):,} samples in {len(entries)} sets")
    if "evaluation_overlap" in run:
        lines.append(f"training pictures equal to an evaluation picture: {run['evaluation_overlap']}")
    if "seconds" in run:
        lines.append(f"this run: {run['seconds']:.0f} s")
    return "\n".join(lines)
