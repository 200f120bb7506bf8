"""Classification and probe metrics from scores; retrieval's are in `retrieval.py`. All rates are
percentages."""

from __future__ import annotations

import torch


def classification_metrics(logits: torch.Tensor, target: torch.Tensor, n_classes: int) -> dict[str, float]:
    """Top-1, top-5 (when there are more than 5 classes) and mean per-class recall, in percent.

    logits: [n, n_classes]; target: [n] class indices. Classes with no sample are left out of the mean."""
    top = logits.topk(min(5, n_classes), dim=-1).indices
    target = target.to(top.device)
    correct = top[:, 0] == target
    recalls = [correct[target == c].float().mean() for c in range(n_classes) if (target == c).any()]
    metrics = {"top1": 100.0 * correct.float().mean().item(),
               "mean_per_class_recall": 100.0 * torch.stack(recalls).mean().item()}
    if n_classes > 5:
        metrics["top5"] = 100.0 * (top == target[:, None]).any(dim=-1).float().mean().item()
    return metrics


def confusion_matrix(predictions: torch.Tensor, target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """[n_classes, n_classes] counts: row = true class, column = predicted class."""
    pairs = target.long().cpu() * n_classes + predictions.long().cpu()
    return torch.bincount(pairs, minlength=n_classes * n_classes).view(n_classes, n_classes)


def caption_win_rate(scores: torch.Tensor) -> float:
    """How often the true caption outscores every hard negative, in percent.

    scores: [n, 1 + n_negatives], the true caption's similarity in column 0. A tie is a loss, so a
    model that cannot tell the captions apart scores 0, not chance."""
    return 100.0 * (scores[:, :1] > scores[:, 1:]).all(dim=1).float().mean().item()
