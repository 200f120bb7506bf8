"""One hash of a model's weights, shared by everything that must never mix outputs of different
weights: the search index's model id, the class-embedding cache and `clipforge eval`'s reuse."""

from __future__ import annotations

import hashlib
import math

import torch
from torch import nn


def weights_fingerprint(model: nn.Module, skip_prefix: str | None = None, max_values: int | None = None) -> str:
    """SHA-256 hex over every state-dict entry's name, dtype, shape and values (entries whose key
    starts with `skip_prefix` left out). With `max_values`, a larger tensor contributes an evenly
    strided sample of that many values: two trainings still differ with near certainty, and a
    ViT-L hashes in milliseconds. Another dtype gives another fingerprint: its outputs differ too."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        if skip_prefix and name.startswith(skip_prefix):
            continue
        values = tensor.detach().reshape(-1)
        if max_values is not None and values.numel() > max_values:
            values = values[:: math.ceil(values.numel() / max_values)]
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(values.cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
