"""Images and texts to unit features in batches, the step every evaluation task starts from; a
data source is read once and streamed through the image tower, so no set is held as pixels."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..data import Sample, SampleError, SkipReport, check_sample, open_source
from ..images import ImageTransform
from ..models import CLIP


def read_samples(source: Any, skips: SkipReport, limit: int | None = None) -> Iterator[Sample]:
    """The readable samples of `source` (anything `open_source` takes) in order, from its first
    `limit` entries; the unreadable ones are counted in `skips`."""
    for raw in itertools.islice(open_source(source), limit):
        try:
            yield check_sample(raw)
        except SampleError as error:
            skips.add(error.reason, raw.key)


@torch.no_grad()
def encode_texts(model: CLIP, texts: Sequence[str], batch_size: int = 512) -> torch.Tensor:
    """[n_texts, dim] unit text features; texts longer than the context are truncated."""
    tokens = model.tokenize(list(texts), truncate=True)
    device = model.logit_scale.device
    return torch.cat([model.encode_text(chunk.to(device), normalize=True) for chunk in tokens.split(batch_size)])


@torch.no_grad()
def encode_images(model: CLIP, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """[n_images, dim] unit image features of preprocessed images [n_images, 3, size, size]."""
    device = model.logit_scale.device
    return torch.cat([model.encode_image(chunk.to(device, torch.float32), normalize=True)
                      for chunk in images.split(batch_size)])


@dataclass
class EncodedSet:
    """A data source as features: one row per readable sample, with every caption it has
    (its caption first, then the distinct alternatives in its metadata) and its metadata."""

    features: torch.Tensor  # [n_images, dim], unit norm
    captions: list[list[str]]
    meta: list[dict[str, Any]]
    skips: SkipReport = field(default_factory=SkipReport)

    def __len__(self) -> int:
        return len(self.meta)


def encode_source(model: CLIP, transform: ImageTransform, source: Any, limit: int | None = None,
                  batch_size: int = 256) -> EncodedSet:
    skips = SkipReport()
    samples = read_samples(source, skips, limit)
    chunks, captions, meta = [], [], []
    while batch := list(itertools.islice(samples, batch_size)):
        chunks.append(encode_images(model, torch.stack([transform(sample.image) for sample in batch])))
        for sample in batch:
            captions.append(list(dict.fromkeys([sample.caption, *sample.alternative_captions])))
            meta.append(sample.meta)
    if not chunks:
        raise ValueError(f"{source} has no readable samples ({skips.summary()})")
    return EncodedSet(torch.cat(chunks), captions, meta, skips)
