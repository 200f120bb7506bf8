"""The id an index stores for the model that embedded it, so that vectors from another model are
never compared with its own."""

from __future__ import annotations

import hashlib
import math

import torch

SAMPLED_VALUES = 65536  # per tensor; smaller tensors are hashed whole


def model_fingerprint(model: torch.nn.Module) -> str:
    """16 hex digits of SHA-256 over every state-dict entry's name, shape and dtype and its values: all
    of them up to `SAMPLED_VALUES`, an evenly strided sample of that many beyond. Two trainings differ
    in the sampled values with near certainty, and a ViT-L hashes in milliseconds. A copy of the model
    in another dtype gets another id: its embeddings differ too."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        values = tensor.detach().reshape(-1)
        if values.numel() > SAMPLED_VALUES:
            values = values[:: math.ceil(values.numel() / SAMPLED_VALUES)]
        digest.update(values.contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]
