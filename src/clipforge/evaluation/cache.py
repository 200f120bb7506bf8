"""Class embeddings kept on disk, so a classifier over many classes and templates (ImageNet's
1,000 x 80 prompts) is embedded once per model. The key hashes the text tower's weights and the
prompts' token ids, so changed weights, classes, templates or tokenizer never meet stale embeddings."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..core.atomic import write_atomically
from ..core.download import cache_dir
from ..models.fingerprint import weights_fingerprint

VISION_PREFIX = "visual."  # the image tower's state-dict keys; everything else feeds encode_text


class ClassEmbeddingCache:
    """`[n_classes, dim]` float32 class embeddings as safetensors files, one per key, in
    `directory` (default: `<clipforge cache>/class-embeddings`)."""

    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = Path(directory) if directory else cache_dir() / "class-embeddings"

    def key(self, model: nn.Module, tokens: torch.Tensor, n_classes: int) -> str:
        """tokens: [n_classes * n_templates, context_length], the prompts exactly as encoded."""
        digest = hashlib.sha256(weights_fingerprint(model, skip_prefix=VISION_PREFIX).encode())
        digest.update(f"{n_classes}|{tuple(tokens.shape)}|".encode())
        digest.update(tokens.cpu().to(torch.int64).contiguous().numpy().tobytes())
        return digest.hexdigest()

    def load_or_compute(self, key: str, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The stored embeddings for `key`, else `compute()`'s, stored for next time; an unreadable
        file is recomputed and replaced."""
        path = self.directory / f"{key}.safetensors"
        if path.is_file():
            try:
                return load_file(str(path))["class_embeddings"]
            except (SafetensorError, OSError, KeyError):
                pass
        embeddings = compute()
        self.directory.mkdir(parents=True, exist_ok=True)
        stored = {"class_embeddings": embeddings.detach().float().cpu().contiguous()}
        write_atomically(path, lambda partial: save_file(stored, str(partial)))
        return embeddings
