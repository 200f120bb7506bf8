"""`builtin:` data specs: the sets `clipforge data prepare` wrote, found through its manifest.

`builtin:train` and `builtin:eval` name every set of that split; `builtin:emoji` and `builtin:icon` the
training sets of that kind; `builtin:<set>` one set. Naming a set twice weights it twice.
Any other spec is a path that `open_source` reads.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .prepare import SOURCES, default_data_dir

KINDS = ("emoji", "icon")

PREFIX = "builtin:"


def builtin_sets(spec: str, data_dir: Path | None = None) -> dict[str, list[Path]]:
    """Set name -> its shard files, for a `builtin:` spec."""
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    manifest_path = data_dir / "manifest.json"
    if not manifest_path.is_file():
        raise FileNotFoundError(f"no prepared data in {data_dir}: run `clipforge data prepare` first "
                                f"(or set CLIPFORGE_DATA to where it was prepared)")
    sets = json.loads(manifest_path.read_text())["sets"]
    wanted = spec[len(PREFIX):]
    if wanted in KINDS:  # the training sets of one kind, none if none was prepared: builtin:emoji, builtin:icon
        chosen = {name: entry for name, entry in sets.items()
                  if entry.get("split") == "train" and name in SOURCES and SOURCES[name].kind == wanted}
    elif not (chosen := {name: entry for name, entry in sets.items() if wanted in (name, entry.get("split"))}):
        raise ValueError(f"{spec!r} matches no prepared set; have {sorted(sets)}, splits train, eval "
                         f"and the training sets' kinds {', '.join(KINDS)}")
    return {name: [data_dir / shard["file"] for shard in entry["shards"]] for name, entry in chosen.items()}


def resolve_training_source(specs: Sequence[str], data_dir: Path | None = None) -> Any:
    """One source for training: the shards of all `builtin:` specs and `.tar` paths together, or a
    single other path (a table or an image folder). `builtin:SPEC*N` counts N times: the data's mix."""
    shards: list[str] = []
    others: list[str] = []
    for spec in specs:
        if spec.startswith(PREFIX):
            spec, times = _repeats(spec)
            shards += [str(path) for paths in builtin_sets(spec, data_dir).values() for path in paths] * times
        elif spec.endswith(".tar"):
            shards.append(spec)
        else:
            others.append(spec)
    if not shards and not others:
        raise ValueError(f"{list(specs)} name no prepared training set")
    if others and (shards or len(others) > 1):
        raise ValueError(f"tables and image folders train alone; got {list(specs)} (convert them to shards to mix)")
    return others[0] if others else shards


def resolve_eval_sources(specs: Sequence[str], data_dir: Path | None = None) -> dict[str, Any]:
    """Set name -> source for evaluation; a plain path is named after its file or folder."""
    sources: dict[str, Any] = {}
    for spec in specs:
        if spec.startswith(PREFIX):
            sources.update({name: [str(p) for p in paths] for name, paths in builtin_sets(spec, data_dir).items()})
        else:
            sources[Path(spec).stem] = spec
    return sources


def _repeats(spec: str) -> tuple[str, int]:
    """`builtin:emoji*5` → (`builtin:emoji`, 5); a spec without `*N` counts once."""
    name, star, times = spec.rpartition("*")
    if not star:
        return spec, 1
    if not times.isdigit() or int(times) < 1:
        raise ValueError(f"{spec!r}: a repeat count after '*' must be a whole number of at least 1")
    return name, int(times)
