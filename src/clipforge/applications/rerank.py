"""Reranking, as DALL-E did: draw many candidate images for a prompt, keep the ones CLIP ranks highest.

Candidates are image files or in-memory images; both go through one ranking (`rank_by_prompt`), which
the CLI, the web app's Score view and `generate`'s candidates share."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image

from ..images import ImageTransform
from ..models import CLIP
from .scores import check_prompts, encode_image_files, encode_prompts, hessel_clip_score, list_candidates


@dataclass(frozen=True)
class RankedCandidate:
    index: int  # the candidate's position in the input (among the readable ones for files)
    cosine: float
    clip_score: float  # Hessel et al.'s 2.5 * max(cos, 0)


def rank_by_prompt(image_features: torch.Tensor, prompt_feature: torch.Tensor,
                   k: int | None = None) -> list[RankedCandidate]:
    """Candidates best first by cosine with the prompt; ties keep input order.

    image_features: [n, dim] unit; prompt_feature: [dim] unit. `k` keeps the best k (all if None)."""
    if image_features.ndim != 2 or image_features.shape[0] == 0:
        raise ValueError("there are no candidates to rank")
    if k is not None and k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    cosine = (image_features.float() @ prompt_feature.float()).cpu()
    order = sorted(range(len(cosine)), key=lambda index: (-float(cosine[index]), index))[:k]
    scores = hessel_clip_score(cosine)
    return [RankedCandidate(index, float(cosine[index]), float(scores[index])) for index in order]


@dataclass
class RankedFile:
    path: str
    cosine: float
    clip_score: float


@dataclass
class Reranking:
    prompt: str
    ranked: list[RankedFile]  # best first, at most k
    candidates: int  # readable candidates ranked
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why) for each unreadable file


def rerank_files(model: CLIP, preprocess: Callable[[Image.Image], torch.Tensor] | ImageTransform, prompt: str,
                 sources: Sequence[str | os.PathLike], k: int | None = None, batch_size: int = 64,
                 progress: bool = False, prefix: str = "") -> Reranking:
    """Rank the image files in `sources` (files, and folders searched recursively) for `prompt`,
    `batch_size` images at a time. Broken files are listed in `skipped` and never stop the run; no
    candidate at all, or none readable, is a ValueError."""
    (prompt,) = check_prompts([prompt])
    paths = list_candidates(sources)
    if not paths:
        raise ValueError("there are no candidate images: the folders hold no image files "
                         f"({', '.join(str(source) for source in sources) or 'none given'})")
    text = encode_prompts(model, [prompt], prefix)[0]
    encoded = encode_image_files(model, preprocess, paths, batch_size, progress, "reranking")
    if not encoded.paths:
        raise ValueError(f"none of the {len(paths)} candidate images could be read "
                         f"(first: {encoded.skipped[0][1]})")
    ranked = [RankedFile(encoded.paths[hit.index], hit.cosine, hit.clip_score)
              for hit in rank_by_prompt(encoded.features, text, k)]
    return Reranking(prompt, ranked, len(encoded.paths), encoded.skipped)


@torch.no_grad()
def rerank_images(model: CLIP, prompt: str, images: torch.Tensor, k: int | None = None,
                  batch_size: int = 64) -> list[RankedCandidate]:
    """Rank in-memory candidates: `images` [n, 3, H, W] in [0, 1] of any size, preprocessed with the
    differentiable preprocessing (equal to the ordinary one within its stated tolerance)."""
    from .guidance import preprocess_tensor

    (prompt,) = check_prompts([prompt])
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError("there are no candidates to rank: images must be [n >= 1, 3, H, W]")
    device = model.logit_scale.device
    features = torch.cat([model.encode_image(preprocess_tensor(chunk.to(device), model.image_size), normalize=True)
                          for chunk in images.split(batch_size)]).float().cpu()
    return rank_by_prompt(features, encode_prompts(model, [prompt])[0], k)
