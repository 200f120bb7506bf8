"""`clipforge eval` as a library call: every model on every dataset, each dataset's tasks, results
gathered in `results.json` and rendered by `report.py`.

`results.json` is rewritten atomically after each model-dataset pair, so an interrupted run keeps
what it finished; run again into the same folder, it reuses the pairs whose model weights
(by fingerprint) and options are unchanged, and evaluates only the rest."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..checkpoints import load
from ..core.atomic import write_atomically
from ..models.fingerprint import weights_fingerprint
from .cache import ClassEmbeddingCache
from .datasets import EvalDataset
from .report import write_report
from .suite import EvalOptions, evaluate_dataset

RESULTS_FILE = "results.json"
RESULTS_FORMAT = 2  # 2: retrieval under two protocols


def run_evaluation(models: Sequence[str], datasets: Sequence[EvalDataset], output_dir: str | os.PathLike,
                   options: EvalOptions | None = None, device: str = "cpu", batch_size: int = 256,
                   log: Callable[[str], None] = print) -> Path:
    """Evaluate, write `results.json`, `report.md` and the figures into `output_dir`; returns the
    report's path. Models are published names, weight files or model folders."""
    options = options or EvalOptions()
    for kind, names in (("model", list(models)), ("dataset", [dataset.name for dataset in datasets])):
        if len(set(names)) != len(names):
            raise ValueError(f"each {kind} may be named once; got {names}")
    plans = {dataset.name: dataset.tasks_to_run(options.tasks) for dataset in datasets}
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    previous = _read_results(output / RESULTS_FILE)
    results: dict[str, Any] = {"format": RESULTS_FORMAT, "models": {}, "datasets": {}, "results": {}}
    cache = ClassEmbeddingCache()
    for name in models:
        model, transform = load(name, device)
        fingerprint = weights_fingerprint(model)
        results["models"][name] = {"fingerprint": fingerprint, "image_size": model.image_size,
                                   "embed_dim": model.config.embed_dim,
                                   "vision": model.config.vision.kind, "text": model.config.text.kind,
                                   "parameters": sum(p.numel() for p in model.parameters())}
        done = previous.get("results", {}).get(name, {})
        unchanged = previous.get("models", {}).get(name, {}).get("fingerprint") == fingerprint
        per_dataset = results["results"].setdefault(name, {})
        for dataset in datasets:
            settings = {**asdict(options), "tasks": plans[dataset.name], "source": dataset.description,
                        "task_spec": dataset.tasks}
            results["datasets"][dataset.name] = {"source": settings["source"], "tasks": plans[dataset.name]}
            if unchanged and done.get(dataset.name, {}).get("settings") == settings:
                log(f"{name} on {dataset.name}: unchanged, kept from {output / RESULTS_FILE}")
                per_dataset[dataset.name] = done[dataset.name]
                continue
            log(f"{name} on {dataset.name}: {', '.join(plans[dataset.name])}")
            figures = evaluate_dataset(model, transform, dataset, plans[dataset.name], options, batch_size, cache)
            per_dataset[dataset.name] = {"settings": settings, **figures}
            _write_json(output / RESULTS_FILE, results)
    _write_json(output / RESULTS_FILE, results)
    return write_report(results, output)


def _read_results(path: Path) -> dict[str, Any]:
    """An earlier run's results, or nothing when there are none or they cannot be read."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) and document.get("format") == RESULTS_FORMAT else {}


def _write_json(path: Path, document: dict[str, Any]) -> None:
    write_atomically(path, lambda partial: partial.write_text(json.dumps(document, indent=1) + "\n"))
