"""The id an index stores for the model that embedded it, so that vectors from another model are
never compared with its own."""

from __future__ import annotations

import torch

from clipforge.models.fingerprint import weights_fingerprint

SAMPLED_VALUES = 65536  # per tensor; smaller tensors are hashed whole


def model_fingerprint(model: torch.nn.Module) -> str:
    """16 hex digits of the weights' fingerprint over up to `SAMPLED_VALUES` values per tensor."""
    return weights_fingerprint(model, max_values=SAMPLED_VALUES)[:16]
