"""The limitations the CLIP paper names, measured on the synthetic shapes data: counting and
spatial relations (how often the true caption outscores captions that differ only in the number
or the relation) and colour+shape combinations held out of training (49-way zero-shot over every
colour-shape pair, seen pairs against held-out ones)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from ..data.shapes import (
    BACKGROUNDS, COLORS, KINDS, SIZES, Probe, ShapeScene, ShapeSpec, counting_probes, held_out_pairs, render,
    shape_radius, spatial_probes,
)
from ..images import ImageTransform
from ..models import CLIP
from .features import encode_images, encode_texts
from .metrics import caption_win_rate
from .templates import load_templates
from .zeroshot import ZeroShotClassifier

PAIR_STREAM = 5  # seeds the single-shape images apart from the generator's own streams


def shapes_probe_metrics(model: CLIP, transform: ImageTransform, count: int = 200,
                         pair_variants: int = 6, seed: int = 0, image_size: int = 64) -> dict[str, float]:
    """Win rates and top-1 figures in percent, each with its chance level, and the probe sizes.

    `count` counting and `count` spatial probes; `pair_variants` images of each of the 49 pairs."""
    metrics: dict[str, float] = {}
    for kind, probes in (("counting", counting_probes(count, seed, image_size)),
                         ("spatial", spatial_probes(count, seed, image_size))):
        scores = caption_scores(model, transform, probes)
        metrics[f"{kind}_win_rate"] = caption_win_rate(scores)
        metrics[f"{kind}_chance"] = 100.0 / scores.shape[1]
        metrics[f"{kind}_probes"] = len(probes)
    metrics.update(pair_metrics(model, transform, pair_variants, seed, image_size))
    return metrics


def caption_scores(model: CLIP, transform: ImageTransform,
                   probes: Sequence[Probe]) -> torch.Tensor:
    """[n_probes, 1 + n_negatives] cosine similarities, the true caption in column 0."""
    images = encode_images(model, torch.stack([transform(probe.image) for probe in probes]))
    texts = encode_texts(model, [text for probe in probes for text in (probe.caption, *probe.negatives)])
    return torch.einsum("nd,nkd->nk", images, texts.view(len(probes), -1, texts.shape[-1]))


def pair_metrics(model: CLIP, transform: ImageTransform, variants: int, seed: int,
                 image_size: int) -> dict[str, float]:
    """Single-shape images classified among all colour-shape pairs: top-1, and how often the
    predicted pair has the right colour and the right shape, for seen and held-out pairs."""
    pairs = [(color, kind) for color in COLORS for kind in KINDS]
    held_out = held_out_pairs(seed)
    images, target = [], []
    for number, (color, kind) in enumerate(pairs):
        for variant in range(variants):
            images.append(single_shape_image(color, kind, number * variants + variant, seed, image_size))
            target.append(number)
    features = encode_images(model, torch.stack([transform(image) for image in images]))
    classnames = [f"{'an' if color[0] in 'aeiou' else 'a'} {color} {kind}" for color, kind in pairs]
    predicted = ZeroShotClassifier(model, classnames, load_templates("shapes")).predict(features).cpu()
    target = torch.tensor(target)
    metrics = {"pairs_chance": 100.0 / len(pairs), "colour_chance": 100.0 / len(COLORS),
               "shape_chance": 100.0 / len(KINDS)}
    for split, rows in (("seen", [pairs[t] not in held_out for t in target]),
                        ("held_out", [pairs[t] in held_out for t in target])):
        rows = torch.tensor(rows)
        truth, guess = [[pairs[i] for i in indices[rows].tolist()] for indices in (target, predicted)]
        metrics[f"{split}_pairs_top1"] = 100.0 * np.mean([t == g for t, g in zip(truth, guess)])
        metrics[f"{split}_pairs_colour"] = 100.0 * np.mean([t[0] == g[0] for t, g in zip(truth, guess)])
        metrics[f"{split}_pairs_shape"] = 100.0 * np.mean([t[1] == g[1] for t, g in zip(truth, guess)])
        metrics[f"{split}_pairs_images"] = len(truth)
    return metrics


def single_shape_image(color: str, kind: str, index: int, seed: int = 0, image_size: int = 64) -> Image.Image:
    """One shape of the pair, its size alternating with `index`, at a seeded place and background."""
    rng = np.random.default_rng([seed, PAIR_STREAM, index])
    size = SIZES[index % len(SIZES)]
    margin = int(np.ceil(shape_radius(size, image_size))) + 1
    x, y = (int(rng.integers(margin, image_size - margin)) for _ in range(2))
    background = list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
    return render(ShapeScene([ShapeSpec(kind, color, size, x, y)], "", [], background), image_size)
