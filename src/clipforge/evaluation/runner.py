"""`clipforge eval` as a library call: every model on every dataset, each dataset's tasks, results
gathered in `results.json` and rendered by `report.py`.

`results.json` is rewritten atomically after each model-dataset pair, so an interrupted run keeps
what it finished; run again into the same folder, it reuses the pairs whose model weights
(by fingerprint) and options are unchanged, and evaluates only the rest."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..atomic import write_atomically
from ..checkpoints import get_tokenizer, load
from ..images import ImageTransform
from ..models import CLIPBase
from ..text import Tokenizer
from ..models.fingerprint import weights_fingerprint
from .cache import ClassEmbeddingCache
from .datasets import PROBES, EvalDataset
from .features import EncodedSet, encode_source, encode_texts
from .linear_probe import linear_probe
from .metrics import classification_metrics, confusion_matrix
from .probes import shapes_probe_metrics
from .report import write_report
from .retrieval import retrieval_metrics, subset_retrieval_metrics
from .suite import class_targets, split_rows
from .templates import load_templates
from .zeroshot import ZeroShotClassifier

RESULTS_FILE = "results.json"
BARE_NAME, PHOTO_PROMPT = "{}", "a photo of a {}."  # the paper's baselines for its prompt-engineering table


@dataclass
class EvalOptions:
    """What changes the figures (and so decides whether an earlier result can be reused)."""

    tasks: list[str] | None = None  # None: every task each dataset has
    limit: int | None = None  # read only a dataset's first `limit` entries
    probe_count: int = 200  # counting and spatial probes each
    pair_variants: int = 6  # images of each colour-shape pair
    seed: int = 0  # the linear probe's split and the shapes probes


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
    results: dict[str, Any] = {"format": 1, "models": {}, "datasets": {}, "results": {}}
    cache = ClassEmbeddingCache()
    for name in models:
        model, transform = load(name, device)
        tokenizer = get_tokenizer(name)
        fingerprint = weights_fingerprint(model)
        results["models"][name] = {"fingerprint": fingerprint, "image_size": model.image_size,
                                   "embed_dim": model.config.embed_dim,
                                   "vision": model.config.vision.kind, "text": model.config.text.kind,
                                   "parameters": sum(p.numel() for p in model.parameters())}
        done = previous.get("results", {}).get(name, {})
        unchanged = previous.get("models", {}).get(name, {}).get("fingerprint") == fingerprint
        per_dataset = results["results"].setdefault(name, {})
        for dataset in datasets:
            settings = {**asdict(options), "tasks": plans[dataset.name], "source": _describe(dataset.source),
                        "task_spec": dataset.tasks}
            results["datasets"][dataset.name] = {"source": settings["source"], "tasks": plans[dataset.name]}
            if unchanged and done.get(dataset.name, {}).get("settings") == settings:
                log(f"{name} on {dataset.name}: unchanged, kept from {output / RESULTS_FILE}")
                per_dataset[dataset.name] = done[dataset.name]
                continue
            log(f"{name} on {dataset.name}: {', '.join(plans[dataset.name])}")
            figures = evaluate_dataset(model, tokenizer, transform, dataset, plans[dataset.name], options,
                                       batch_size, cache)
            per_dataset[dataset.name] = {"settings": settings, **figures}
            _write_json(output / RESULTS_FILE, results)
    _write_json(output / RESULTS_FILE, results)
    return write_report(results, output)


def evaluate_dataset(model: CLIPBase, tokenizer: Tokenizer, transform: ImageTransform, dataset: EvalDataset,
                     tasks: Sequence[str], options: EvalOptions, batch_size: int = 256,
                     cache: ClassEmbeddingCache | None = None) -> dict[str, Any]:
    """One model on one dataset: {"samples", "skipped", and one entry per task}."""
    model.eval()
    if PROBES in tasks:
        return {PROBES: shapes_probe_metrics(model, tokenizer, transform, options.probe_count,
                                             options.pair_variants, options.seed)}
    encoded = encode_source(model, transform, dataset.source, options.limit, batch_size)
    figures: dict[str, Any] = {"samples": len(encoded), "skipped": encoded.skips.as_dict()}
    split_by = dataset.tasks.get("split_by")
    if "zeroshot" in tasks:
        figures["zeroshot"] = zeroshot_figures(model, tokenizer, encoded, dataset.tasks["zeroshot"], split_by, cache)
    if "retrieval" in tasks:
        figures["retrieval"] = retrieval_figures(model, tokenizer, encoded, split_by)
    if "linear-probe" in tasks:
        _, target = class_targets(encoded.meta, dataset.tasks["zeroshot"])
        figures["linear_probe"] = linear_probe(encoded.features, target, options.seed)
    return figures


def zeroshot_figures(model: CLIPBase, tokenizer: Tokenizer, encoded: EncodedSet, task: dict[str, Any],
                     split_by: str | None = None, cache: ClassEmbeddingCache | None = None) -> dict[str, Any]:
    """Metrics of the task's prompt ensemble, its confusion matrix, top-1 per split, and top-1 of
    the bare class name and of "a photo of a {}." beside the ensemble's."""
    classnames, target = class_targets(encoded.meta, task)
    templates = load_templates(task["templates"])

    def logits(prompts: list[str]) -> torch.Tensor:
        return ZeroShotClassifier(model, classnames, prompts, tokenizer, cache=cache).logits(encoded.features).cpu()

    ensemble = logits(templates)
    predicted = ensemble.argmax(dim=-1)
    figures: dict[str, Any] = {
        "classes": classnames, "label": task["label"], "templates": str(task["templates"]),
        "n_templates": len(templates), **classification_metrics(ensemble, target, len(classnames)),
        "confusion_matrix": confusion_matrix(predicted, target, len(classnames)).tolist(),
        "prompts": {BARE_NAME: classification_metrics(logits([BARE_NAME]), target, len(classnames))["top1"],
                    PHOTO_PROMPT: classification_metrics(logits([PHOTO_PROMPT]), target, len(classnames))["top1"],
                    "ensemble": classification_metrics(ensemble, target, len(classnames))["top1"]},
    }
    for split, rows in split_rows(encoded.meta, split_by):
        figures[f"{split}_top1"] = 100.0 * (predicted[rows] == target[rows]).float().mean().item()
        figures[f"{split}_samples"] = int(rows.sum())
    return figures


def retrieval_figures(model: CLIPBase, tokenizer: Tokenizer, encoded: EncodedSet,
                      split_by: str | None = None) -> dict[str, Any]:
    """Both directions over every caption of every image, overall and per split."""
    texts = [caption for captions in encoded.captions for caption in captions]
    owners = torch.tensor([image for image, captions in enumerate(encoded.captions) for _ in captions])
    text_features = encode_texts(model, tokenizer, texts)
    figures: dict[str, Any] = {"images": len(encoded), "captions": len(texts),
                               **retrieval_metrics(encoded.features, text_features, owners)}
    for split, rows in split_rows(encoded.meta, split_by):
        figures[split] = {"images": int(rows.sum()),
                          **subset_retrieval_metrics(encoded.features, text_features, owners, rows)}
    return figures


def _describe(source: Any) -> Any:
    return source if source is None or isinstance(source, (str, list)) else str(source)


def _read_results(path: Path) -> dict[str, Any]:
    """An earlier run's results, or nothing when there are none or they cannot be read."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) and document.get("format") == 1 else {}


def _write_json(path: Path, document: dict[str, Any]) -> None:
    write_atomically(path, lambda partial: partial.write_text(json.dumps(document, indent=1) + "\n"))
