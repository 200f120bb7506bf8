"""What a dataset name given to `clipforge eval` means: `shapes` (the probes, generated on the
fly), a prepared built-in set (`openmoji`, `openmoji-variants`, `fashion-mnist`, found through the
data manifest, its tasks in `tasks.json`), or a path to the user's own table, image folder or shards."""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .templates import DEFAULT_TEMPLATE_SET

SHAPES = "shapes"
TASKS = ("zeroshot", "retrieval", "linear-probe", "bias", "localization")
ON_REQUEST = ("localization",)  # minutes of CPU: run only when --task names them, never by default or in training
PROBES = "probes"  # the only task of `shapes`


def task_table() -> dict[str, dict[str, Any]]:
    """Each built-in set's tasks (`tasks.json`), keyed by the set's name."""
    return json.loads((resources.files(__package__) / "tasks.json").read_text())


@dataclass
class EvalDataset:
    """`source`: anything `open_source` reads (None for shapes); `tasks`: a `tasks.json` entry;
    `spec`: the name a prepared set was asked for by, since its files' paths are this machine's."""

    name: str
    source: Any
    tasks: dict[str, Any] = field(default_factory=dict)
    spec: str | None = None

    @property
    def description(self) -> Any:
        """What results record as the data: the prepared set's name, else the source as given."""
        if self.spec is not None:
            return self.spec
        return self.source if self.source is None or isinstance(self.source, (str, list)) else str(self.source)

    @property
    def supported_tasks(self) -> list[str]:
        if self.name == SHAPES:
            return [PROBES]
        labelled = "zeroshot" in self.tasks
        return [task for task, ok in (("zeroshot", labelled), ("retrieval", self.tasks.get("retrieval")),
                                      ("linear-probe", labelled), ("bias", "bias" in self.tasks)) if ok]

    def tasks_to_run(self, requested: list[str] | None) -> list[str]:
        """The requested tasks this dataset has (all of them when none are requested); shapes
        always runs its probes."""
        if requested is None or self.name == SHAPES:
            return self.supported_tasks
        requestable = self.supported_tasks + [task for task in ON_REQUEST if task in self.tasks]
        chosen = [task for task in requestable if task in requested]
        if not chosen:
            raise ValueError(f"{self.name} has none of the tasks {', '.join(requested)}; it has "
                             f"{', '.join(requestable)}" + ("" if "zeroshot" in self.tasks else
                                                                      " (labels come from --label-key)"))
        return chosen


def resolve_dataset(spec: str, label_key: str | None = None, templates: str | None = None,
                    data_dir: str | os.PathLike | None = None) -> EvalDataset:
    """`templates` (a set name or file) replaces every zero-shot task's own; `label_key` names the
    metadata field (a table column, a shard's JSON key) that labels the user's own data."""
    from ..data.builtin import PREFIX, builtin_sets  # here: `clipforge eval --help` reads this module without torch

    if spec == SHAPES:
        return EvalDataset(SHAPES, None)
    source: Any
    if Path(spec).exists():
        tasks: dict[str, Any] = {"retrieval": True}
        if label_key:
            tasks["zeroshot"] = {"label": label_key, "templates": DEFAULT_TEMPLATE_SET}
        name, source = Path(spec).stem, spec
    else:
        name = spec.removeprefix(PREFIX)
        try:
            sets = builtin_sets(PREFIX + name, data_dir)
        except FileNotFoundError:  # nothing prepared: a built-in set's name is told to prepare, a typo is not
            if name not in task_table():
                raise ValueError(_unknown_dataset(name, sorted(task_table()))) from None
            raise
        except json.JSONDecodeError:  # a damaged manifest is not an unknown name
            raise
        except ValueError:  # no prepared set of that name
            sets = {}
        if list(sets) != [name]:
            raise ValueError(_unknown_dataset(name, evaluation_set_names(data_dir)))
        source = [str(path) for path in sets[name]]
        tasks = task_table().get(name, {"retrieval": True})
    for task in ("zeroshot", "bias"):  # both classify with a template ensemble
        if templates and task in tasks:
            tasks[task] = {**tasks[task], "templates": templates}
    return EvalDataset(name, source, tasks, spec=None if Path(spec).exists() else PREFIX + name)


def evaluation_set_names(data_dir: str | os.PathLike | None = None) -> list[str]:
    """The prepared sets of the evaluation split, or, with none prepared, the built-in ones `tasks.json` describes."""
    from ..data.builtin import PREFIX, builtin_sets

    try:
        return sorted(builtin_sets(PREFIX + "eval", data_dir))
    except (FileNotFoundError, ValueError):
        return sorted(task_table())


def _unknown_dataset(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, [*known, SHAPES], n=1)
    hint = f" Did you mean {close[0]}?" if close else ""
    return (f"no dataset {name!r}: name an evaluation set ({', '.join(known)}), {SHAPES} (the probes), or the path "
            f"of a table, an image folder or shards.{hint}")


def datasets_from_sources(sources: dict[str, Any]) -> list[EvalDataset]:
    """Set name -> source (as `data.builtin.resolve_eval_sources` gives) to datasets with their tasks:
    a built-in set's from `tasks.json`, retrieval for any other."""
    table = task_table()
    return [EvalDataset(name, source, table.get(name, {"retrieval": True})) for name, source in sources.items()]
