"""The evaluation sets a training run reports on: each set's tasks (retrieval, zero-shot) are data
in `tasks.json`, keyed by the set's name; images are preprocessed once and kept in memory."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import torch

from ..data import SampleError, check_sample, open_source
from ..images import ImageTransform
from ..models import CLIP
from ..text import Tokenizer
from .retrieval import retrieval_metrics
from .zeroshot import ZeroShotClassifier


def task_table() -> dict[str, dict[str, Any]]:
    return json.loads((resources.files(__package__) / "tasks.json").read_text())


@dataclass
class EvalSet:
    name: str
    images: torch.Tensor  # [n, 3, size, size], preprocessed, stored in bfloat16 to halve memory
    captions: list[str]
    meta: list[dict[str, Any]]

    @classmethod
    def from_source(cls, name: str, source: Any, transform: ImageTransform) -> "EvalSet":
        images, captions, meta = [], [], []
        for raw in open_source(source):
            try:
                sample = check_sample(raw)
            except SampleError:
                continue
            images.append(transform(sample.image).to(torch.bfloat16))
            captions.append(sample.caption)
            meta.append(sample.meta)
        if not images:
            raise ValueError(f"evaluation set {name} has no readable samples")
        return cls(name, torch.stack(images), captions, meta)

    @torch.no_grad()
    def image_features(self, model: CLIP, batch_size: int = 512) -> torch.Tensor:
        device = model.logit_scale.device
        return torch.cat([model.encode_image(chunk.to(device, torch.float32), normalize=True)
                          for chunk in self.images.split(batch_size)])

    @torch.no_grad()
    def evaluate(self, model: CLIP, tokenizer: Tokenizer, tasks: dict[str, Any]) -> dict[str, float]:
        prefix = self.name.replace("-", "_")
        features = self.image_features(model)
        metrics: dict[str, float] = {}
        if tasks.get("retrieval"):
            tokens = tokenizer(self.captions, context_length=model.context_length, truncate=True)
            text_features = torch.cat([model.encode_text(chunk.to(features.device), normalize=True)
                                       for chunk in tokens.split(512)])
            own = torch.arange(len(self.captions))
            metrics.update({f"{prefix}_{k}": v for k, v in retrieval_metrics(features, text_features, own).items()})
            if tasks.get("split_by"):
                for flag, label in ((True, "seen"), (False, "unseen")):
                    rows = torch.tensor([m.get(tasks["split_by"]) is flag for m in self.meta])
                    if rows.any():
                        subset = retrieval_metrics(features[rows], text_features[rows], torch.arange(int(rows.sum())))
                        metrics.update({f"{prefix}_{label}_{k}": v for k, v in subset.items() if "R@" in k})
        if "zeroshot" in tasks:
            metrics.update({f"{prefix}_zeroshot_{k}": v
                            for k, v in self._zeroshot(model, tokenizer, features, tasks["zeroshot"]).items()})
        return metrics

    def _zeroshot(self, model: CLIP, tokenizer: Tokenizer, features: torch.Tensor, task: dict[str, Any]) -> dict[str, float]:
        labels = [str(m[task["label"]]) for m in self.meta]
        names = sorted(set(labels))
        readable = task.get("classnames", {})
        classifier = ZeroShotClassifier(model, [readable.get(n, n) for n in names], task["templates"], tokenizer)
        target = torch.tensor([names.index(label) for label in labels], device=features.device)
        logits = classifier.logits(features)
        return classification_metrics(logits, target, len(names))


def classification_metrics(logits: torch.Tensor, target: torch.Tensor, n_classes: int) -> dict[str, float]:
    """Top-1, top-5 (when there are more than 5 classes) and mean per-class recall, in percent."""
    top = logits.topk(min(5, n_classes), dim=-1).indices
    correct = top[:, 0] == target
    recalls = [correct[target == c].float().mean() for c in range(n_classes) if (target == c).any()]
    metrics = {"top1": 100.0 * correct.float().mean().item(),
               "mean_per_class_recall": 100.0 * torch.stack(recalls).mean().item()}
    if n_classes > 5:
        metrics["top5"] = 100.0 * (top == target[:, None]).any(dim=-1).float().mean().item()
    return metrics


class EvalSuite:
    def __init__(self, sets: Sequence[EvalSet]):
        self.sets = list(sets)
        self.tasks = task_table()

    @classmethod
    def load(cls, sources: dict[str, Any], transform: ImageTransform) -> "EvalSuite":
        """`sources`: set name -> anything `open_source` reads (e.g. a list of shard paths)."""
        return cls([EvalSet.from_source(name, source, transform) for name, source in sources.items()])

    def evaluate(self, model: CLIP, tokenizer: Tokenizer) -> dict[str, float]:
        was_training = model.training
        model.eval()
        metrics: dict[str, float] = {}
        for eval_set in self.sets:
            tasks = self.tasks.get(eval_set.name, {"retrieval": True})
            metrics.update(eval_set.evaluate(model, tokenizer, tasks))
        model.train(was_training)
        return metrics

