"""One evaluation: a dataset's tasks run on a model. `clipforge eval` and the training loop both
call `evaluate_dataset` and name its figures with `headline_metrics`, so a metric name means the
same measurement wherever it is printed.

Retrieval runs under two protocols with two names: `one_caption` (each image with its own caption,
as in training) and `all_captions` (every caption an image has: its own and the alternatives in
its metadata; an image counts as found at the rank of its best-scored caption)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..images import ImageTransform
from ..models import CLIP
from .bias import HEADLINE as BIAS_HEADLINE
from .bias import bias_figures
from .cache import ClassEmbeddingCache
from .datasets import PROBES, EvalDataset
from .features import EncodedSet, encode_source, encode_texts
from .localization import localization_figures
from .metrics import classification_metrics, confusion_matrix
from .probes import shapes_probe_metrics
from .retrieval import retrieval_metrics, subset_retrieval_metrics
from .templates import load_templates
from .zeroshot import ZeroShotClassifier

BARE_NAME, PHOTO_PROMPT = "{}", "a photo of a {}."  # the paper's baselines for its prompt-engineering table
RETRIEVAL_PROTOCOLS = ("one_caption", "all_captions")
HEADLINE_SUFFIXES = ("R@1", "R@5", "R@10", "top1", "top5", "test_accuracy", "pointing_game", "box_AP@0.5",
                     "_spread", "tv_from_default")
LOCALIZATION_HEADLINE = ("pointing_game", "box_AP@0.5")


@dataclass
class EvalOptions:
    """What changes the figures (and so decides whether an earlier result can be reused)."""

    tasks: list[str] | None = None  # None: every task each dataset has
    limit: int | None = None  # read only a dataset's first `limit` entries
    probe_count: int = 200  # counting and spatial probes each
    pair_variants: int = 6  # images of each colour-shape pair
    seed: int = 0  # the linear probe's split and the shapes probes


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


def evaluate_dataset(model: CLIP, transform: ImageTransform, dataset: EvalDataset, tasks: Sequence[str],
                     options: EvalOptions, batch_size: int = 256,
                     cache: ClassEmbeddingCache | None = None) -> dict[str, Any]:
    """One model on one dataset: {"samples", "skipped", and one entry per task}."""
    was_training = model.training
    model.eval()
    try:
        if PROBES in tasks:
            return {PROBES: shapes_probe_metrics(model, transform, options.probe_count, options.pair_variants,
                                                 options.seed)}
        figures: dict[str, Any] = {}
        if "localization" in tasks:  # scenes composed from the set's glyphs: it reads the set itself
            figures["localization"] = localization_figures(model, dataset.source, dataset.tasks["localization"],
                                                           options.seed, options.limit)
            if set(tasks) == {"localization"}:
                return figures
        encoded = encode_source(model, transform, dataset.source, options.limit, batch_size)
        figures.update({"samples": len(encoded), "skipped": encoded.skips.as_dict()})
        split_by = dataset.tasks.get("split_by")
        if "zeroshot" in tasks:
            figures["zeroshot"] = zeroshot_figures(model, encoded, dataset.tasks["zeroshot"], split_by, cache)
        if "retrieval" in tasks:
            figures["retrieval"] = {protocol: retrieval_figures(model, encoded, protocol, split_by)
                                    for protocol in RETRIEVAL_PROTOCOLS}
        if "linear-probe" in tasks:
            from .linear_probe import linear_probe  # scikit-learn, only for this task

            _, target = class_targets(encoded.meta, dataset.tasks["zeroshot"])
            figures["linear_probe"] = linear_probe(encoded.features, target, options.seed)
        if "bias" in tasks:
            figures["bias"] = bias_figures(model, encoded, dataset.tasks["bias"], cache)
        return figures
    finally:
        model.train(was_training)


def zeroshot_figures(model: CLIP, encoded: EncodedSet, task: dict[str, Any], split_by: str | None = None,
                     cache: ClassEmbeddingCache | None = None) -> dict[str, Any]:
    """Metrics of the task's prompt ensemble, its confusion matrix, top-1 per split, and top-1 of
    the bare class name and of "a photo of a {}." beside the ensemble's."""
    classnames, target = class_targets(encoded.meta, task)
    templates = load_templates(task["templates"])

    def logits(prompts: list[str]) -> torch.Tensor:
        return ZeroShotClassifier(model, classnames, prompts, cache=cache).logits(encoded.features).cpu()

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


def retrieval_figures(model: CLIP, encoded: EncodedSet, protocol: str = "all_captions",
                      split_by: str | None = None) -> dict[str, Any]:
    """Both directions, overall and per split, with each image's own caption (`one_caption`) or
    all of its captions (`all_captions`) in the text gallery."""
    if protocol not in RETRIEVAL_PROTOCOLS:
        raise ValueError(f"retrieval protocol must be one of {RETRIEVAL_PROTOCOLS}, got {protocol!r}")
    captions = [c[:1] for c in encoded.captions] if protocol == "one_caption" else encoded.captions
    texts = [caption for image_captions in captions for caption in image_captions]
    owners = torch.tensor([image for image, image_captions in enumerate(captions) for _ in image_captions])
    text_features = encode_texts(model, texts)
    figures: dict[str, Any] = {"images": len(encoded), "captions": len(texts),
                               **retrieval_metrics(encoded.features, text_features, owners)}
    for split, rows in split_rows(encoded.meta, split_by):
        figures[split] = {"images": int(rows.sum()),
                          **subset_retrieval_metrics(encoded.features, text_features, owners, rows)}
    return figures


def headline_metrics(dataset: str, figures: dict[str, Any]) -> dict[str, float]:
    """A dataset's figures as flat `name: value` pairs, e.g. `openmoji_one_caption_image_to_text_R@10`,
    `openmoji_zeroshot_top1`, `openmoji_variants_bias_skin_tone_spread`: the names training logs and
    `clipforge eval` prints."""
    prefix = dataset.replace("-", "_")
    metrics: dict[str, float] = {}
    for protocol, retrieval in figures.get("retrieval", {}).items():
        for part in ("", "seen", "unseen"):
            values = retrieval.get(part, {}) if part else retrieval
            split = f"{part}_" if part else ""
            metrics.update({f"{prefix}_{protocol}_{split}{key}": value for key, value in values.items()
                            if "_to_" in key})
    zeroshot = figures.get("zeroshot", {})
    metrics.update({f"{prefix}_zeroshot_{key}": value for key, value in zeroshot.items()
                    if isinstance(value, float)})
    probe = figures.get("linear_probe", {})
    metrics.update({f"{prefix}_linear_probe_{key}": value for key, value in probe.items()
                    if key.endswith("accuracy")})
    metrics.update({f"{prefix}_{key}": value for key, value in figures.get(PROBES, {}).items()
                    if key.endswith(("win_rate", "top1"))})
    bias = figures.get("bias", {})
    metrics.update({f"{prefix}_bias_{key}": bias[key] for key in BIAS_HEADLINE if bias.get(key) is not None})
    localization = figures.get("localization", {})
    metrics.update({f"{prefix}_localization_{method}_{key}": value for method in ("dense", "crops", "chance")
                    for key, value in localization.get(method, {}).items() if key in LOCALIZATION_HEADLINE})
    return metrics


def format_headline(metrics: dict[str, float]) -> str:
    """The recall@k, top-k and probe-accuracy lines of `metrics`, one `name value` line each."""
    return "\n".join(f"{key:55s} {value:8.2f}" for key, value in metrics.items() if key.endswith(HEADLINE_SUFFIXES))
