"""AdamW with CLIP's decay rule and the cosine schedule with linear warm-up."""

from __future__ import annotations

import math

import torch
from torch import nn

NO_DECAY_NAMES = ("logit_scale", "logit_bias")


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only: gains, biases, embeddings and the temperature are exempt."""
    decay, exempt = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        if parameter.ndim < 2 or "embedding" in name or name.endswith(NO_DECAY_NAMES):
            exempt.append(parameter)
        else:
            decay.append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": exempt, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float],
                   eps: float) -> torch.optim.AdamW:
    """Fused AdamW where the device supports it: one kernel per step instead of one per tensor."""
    groups = parameter_groups(model, weight_decay)
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


def cosine_lr(step: int, base_lr: float, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """Linear warm-up from base_lr/warmup to base_lr, then cosine decay to min_ratio * base_lr."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))
