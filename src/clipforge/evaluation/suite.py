"""The evaluation sets a training run reports on: each set's tasks (retrieval, zero-shot) are data
in `tasks.json`, keyed by the set's name; images are preprocessed once and kept in memory.
Unreadable samples are skipped and counted in the set's `skips`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import torch

from ..data import SkipReport
from ..images import ImageTransform
from ..models import CLIPBase
from ..text import Tokenizer
from .features import encode_images, encode_texts, read_samples
from .metrics import classification_metrics
from .retrieval import retrieval_metrics, subset_retrieval_metrics
from .templates import load_templates
from .zeroshot import ZeroShotClassifier


def task_table() -> dict[str, dict[str, Any]]:
    return json.loads((resources.files(__package__) / "tasks.json").read_text())


def class_targets(meta: Sequence[dict[str, Any]], task: dict[str, Any]) -> tuple[list[str], torch.Tensor]:
    """A zero-shot task's class names (readable, in sorted label order) and each sample's class
    index [n]; the label is the metadata field `task["label"]`."""
    if any(task["label"] not in m for m in meta):
        raise ValueError(f"zero-shot needs the label {task['label']!r} in every sample's metadata")
    labels = [str(m[task["label"]]) for m in meta]
    names = sorted(set(labels))
    index = {name: i for i, name in enumerate(names)}
    readable = task.get("classnames", {})
    return [readable.get(name, name) for name in names], torch.tensor([index[label] for label in labels])


def split_rows(meta: Sequence[dict[str, Any]], split_by: str | None) -> list[tuple[str, torch.Tensor]]:
    """("seen", rows) and ("unseen", rows), boolean [n], by the metadata flag `split_by` (True or
    False, as OpenMoji's concepts seen in training); splits with no rows are left out."""
    if not split_by:
        return []
    splits = [(name, torch.tensor([m.get(split_by) is flag for m in meta]))
              for name, flag in (("seen", True), ("unseen", False))]
    return [(name, rows) for name, rows in splits if rows.any()]


@dataclass
class EvalSet:
    name: str
    images: torch.Tensor  # [n, 3, size, size], preprocessed, stored in bfloat16 to halve memory
    captions: list[str]
    meta: list[dict[str, Any]]
    skips: SkipReport = field(default_factory=SkipReport)

    @classmethod
    def from_source(cls, name: str, source: Any, transform: ImageTransform) -> "EvalSet":
        skips = SkipReport()
        images, captions, meta = [], [], []
        for sample in read_samples(source, skips):
            images.append(transform(sample.image).to(torch.bfloat16))
            captions.append(sample.caption)
            meta.append(sample.meta)
        if not images:
            raise ValueError(f"evaluation set {name} has no readable samples ({skips.summary()})")
        return cls(name, torch.stack(images), captions, meta, skips)

    def image_features(self, model: CLIPBase, batch_size: int = 512) -> torch.Tensor:
        return encode_images(model, self.images, batch_size)

    @torch.no_grad()
    def evaluate(self, model: CLIPBase, tokenizer: Tokenizer, tasks: dict[str, Any]) -> dict[str, float]:
        prefix = self.name.replace("-", "_")
        features = self.image_features(model)
        metrics: dict[str, float] = {}
        if tasks.get("retrieval"):
            text_features = encode_texts(model, tokenizer, self.captions)
            own = torch.arange(len(self.captions))
            metrics.update({f"{prefix}_{k}": v for k, v in retrieval_metrics(features, text_features, own).items()})
            for label, rows in split_rows(self.meta, tasks.get("split_by")):
                subset = subset_retrieval_metrics(features, text_features, own, rows)
                metrics.update({f"{prefix}_{label}_{k}": v for k, v in subset.items() if "R@" in k})
        if "zeroshot" in tasks:
            metrics.update({f"{prefix}_zeroshot_{k}": v
                            for k, v in self._zeroshot(model, tokenizer, features, tasks["zeroshot"]).items()})
        return metrics

    def _zeroshot(self, model: CLIPBase, tokenizer: Tokenizer, features: torch.Tensor, task: dict[str, Any]) -> dict[str, float]:
        classnames, target = class_targets(self.meta, task)
        classifier = ZeroShotClassifier(model, classnames, load_templates(task["templates"]), tokenizer)
        return classification_metrics(classifier.logits(features), target, len(classnames))


class EvalSuite:
    def __init__(self, sets: Sequence[EvalSet]):
        self.sets = list(sets)
        self.tasks = task_table()

    @classmethod
    def load(cls, sources: dict[str, Any], transform: ImageTransform) -> "EvalSuite":
        """`sources`: set name -> anything `open_source` reads (e.g. a list of shard paths)."""
        return cls([EvalSet.from_source(name, source, transform) for name, source in sources.items()])

    def evaluate(self, model: CLIPBase, tokenizer: Tokenizer) -> dict[str, float]:
        was_training = model.training
        model.eval()
        metrics: dict[str, float] = {}
        for eval_set in self.sets:
            tasks = self.tasks.get(eval_set.name, {"retrieval": True})
            metrics.update(eval_set.evaluate(model, tokenizer, tasks))
        model.train(was_training)
        return metrics

