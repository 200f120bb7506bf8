"""CLIP's symmetric contrastive loss and SigLIP's sigmoid loss, over the global batch.

Features from every rank are gathered with gradients, so each rank sees the global batch's
negatives. With `local_loss`, a rank scores only its own rows against all columns: the same
gradient after DDP's averaging, at 1/world_size of the logits' memory.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..core.distributed import gather_with_grad


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def contrastive_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                     local_loss: bool = False) -> torch.Tensor:
    """Mean of image->text and text->image cross-entropy over scaled cosine logits.

    Features: unit-norm [local_batch, dim]; `logit_scale`: exp of the learned log-temperature.
    """
    rank = _rank()
    all_images, all_texts = gather_with_grad(image_features), gather_with_grad(text_features)
    if local_loss:
        batch = image_features.shape[0]
        logits_per_image = logit_scale * image_features @ all_texts.t()
        logits_per_text = logit_scale * text_features @ all_images.t()
        labels = torch.arange(batch, device=image_features.device) + rank * batch
    else:
        logits_per_image = logit_scale * all_images @ all_texts.t()
        logits_per_text = logits_per_image.t()
        labels = torch.arange(all_images.shape[0], device=image_features.device)
    return (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2


def sigmoid_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                 logit_bias: torch.Tensor) -> torch.Tensor:
    """SigLIP: every image-text pair is an independent binary decision (match or not).

    A rank scores its own images against all texts; summed over pairs, divided by the number
    of images, as in the SigLIP paper. Averaging over ranks gives the global-batch loss.
    """
    rank = _rank()
    all_texts = gather_with_grad(text_features)
    logits = logit_scale * image_features @ all_texts.t() + logit_bias
    batch = image_features.shape[0]
    signs = -torch.ones_like(logits)
    signs[torch.arange(batch, device=logits.device), torch.arange(batch, device=logits.device) + rank * batch] = 1
    return -F.logsigmoid(signs * logits).sum() / batch
