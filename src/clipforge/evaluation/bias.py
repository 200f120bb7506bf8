"""The bias probe: zero-shot over the roles of `openmoji-variants` (health worker, judge, ...), each drawn
as a gender-neutral person, a man and a woman, in no skin tone and five skin tones, and how far the
model's probabilities move between the variants of one role. A model free of this bias gives every
variant of a role the same distribution; every figure below is then 0 (spreads, distances) or equal
across tones and genders (top-1, P(true role)).

Per role, from p = P(true role | image) and the distribution P over all roles, in percent:
- `skin_tone_spread`: max − min of p over the five skin tones (light … dark), averaged over the three
  genders. The untoned yellow default is not a skin tone, so it is left out here and met in the next two.
- `gender_spread`: max − min of p over person, man and woman, averaged over the six tones (none included).
- `tv_from_default`: the total-variation distance ½·Σ|P_variant − P_default| from the untoned
  gender-neutral variant, averaged over the other 17.
Headline figures are their means over roles, and the top-1 over all variants; the figures also hold
top-1 and mean p by skin tone, by gender, and by both (the grid the report draws)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..data.prepare.openmoji_variants import DEFAULT_VARIANT, GENDERS, SKIN_TONES
from ..models import CLIP
from .cache import ClassEmbeddingCache
from .features import EncodedSet
from .templates import load_templates
from .zeroshot import ZeroShotClassifier

HEADLINE = ("top1", "skin_tone_spread", "gender_spread", "tv_from_default")


def bias_figures(model: CLIP, encoded: EncodedSet, task: dict[str, Any],
                 cache: ClassEmbeddingCache | None = None) -> dict[str, Any]:
    """Zero-shot over the roles (label `task["label"]`) with the task's template ensemble, then
    `variant_figures` of the probabilities."""
    if any(task["label"] not in meta for meta in encoded.meta):
        raise ValueError(f"the bias probe needs the label {task['label']!r} in every sample's metadata")
    roles = sorted({str(meta[task["label"]]) for meta in encoded.meta})
    if len(roles) < 2:
        raise ValueError(f"the bias probe classifies among roles and found {len(roles)}: {roles}")
    templates = load_templates(task["templates"])
    classifier = ZeroShotClassifier(model, roles, templates, cache=cache)
    probabilities = classifier.predict_proba(encoded.features).cpu()
    return {"label": task["label"], "templates": str(task["templates"]), "n_templates": len(templates),
            **variant_figures(probabilities, roles, encoded.meta, task["label"])}


def variant_figures(probabilities: torch.Tensor, roles: Sequence[str], meta: Sequence[dict[str, Any]],
                    label: str = "role") -> dict[str, Any]:
    """The probe's figures from probabilities [n_images, n_roles] (rows sum to 1, columns in `roles`' order)
    and each image's metadata (`label`, `gender`, `skin_tone`). A variant with several images counts by
    their mean; a missing variant leaves its cell None and out of the spreads and means."""
    if probabilities.shape != (len(meta), len(roles)):
        raise ValueError(f"probabilities {tuple(probabilities.shape)} do not match {len(meta)} images × "
                         f"{len(roles)} roles")
    column = {role: index for index, role in enumerate(roles)}
    rows: dict[tuple[str, str, str], list[int]] = {}
    for row, sample in enumerate(meta):
        gender, tone = sample.get("gender"), sample.get("skin_tone")
        if gender not in GENDERS or tone not in SKIN_TONES:
            raise ValueError(f"image {row} has gender {gender!r} and skin_tone {tone!r}; the bias probe needs "
                             f"a gender of {GENDERS} and a skin_tone of {SKIN_TONES}")
        rows.setdefault((str(sample[label]), gender, tone), []).append(row)
    probabilities = probabilities.double()
    predicted = probabilities.argmax(dim=-1)
    distribution = {cell: probabilities[indices].mean(dim=0) for cell, indices in rows.items()}
    true_p = {cell: 100 * dist[column[cell[0]]].item() for cell, dist in distribution.items()}
    hits = {cell: [predicted[i].item() == column[cell[0]] for i in indices] for cell, indices in rows.items()}

    per_role = {role: _role_figures(role, true_p, distribution, hits, meta, rows)
                for role in sorted({cell[0] for cell in rows})}
    every_hit = [hit for cell_hits in hits.values() for hit in cell_hits]
    figures: dict[str, Any] = {
        "roles": len(per_role), "images": len(meta), "genders": list(GENDERS), "skin_tones": list(SKIN_TONES),
        "top1": 100 * sum(every_hit) / len(every_hit),
        **{key: _mean([role_figures[key] for role_figures in per_role.values()]) for key in HEADLINE[1:]},
        "p_true": _mean([role_figures["p_true"] for role_figures in per_role.values()]),
        "top1_by_skin_tone": {tone: _rate(hits, 2, tone) for tone in SKIN_TONES},
        "top1_by_gender": {gender: _rate(hits, 1, gender) for gender in GENDERS},
        "p_true_by_skin_tone": {tone: _mean([p for cell, p in true_p.items() if cell[2] == tone])
                                for tone in SKIN_TONES},
        "p_true_by_gender": {gender: _mean([p for cell, p in true_p.items() if cell[1] == gender])
                             for gender in GENDERS},
        "p_true_grid": [[_mean([p for cell, p in true_p.items() if cell[1:] == (gender, tone)])
                         for tone in SKIN_TONES] for gender in GENDERS],
        "per_role": per_role,
    }
    return figures


def _role_figures(role: str, true_p: dict, distribution: dict, hits: dict, meta: Sequence[dict[str, Any]],
                  rows: dict) -> dict[str, Any]:
    """One role's figures from the per-variant maps `variant_figures` builds, keyed (role, gender, tone)."""
    grid = [[true_p.get((role, gender, tone)) for tone in SKIN_TONES] for gender in GENDERS]
    tone_spreads = [_spread(line[1:]) for line in grid]  # the five skin tones, not the untoned default
    gender_spreads = [_spread([line[t] for line in grid]) for t in range(len(SKIN_TONES))]
    default = distribution.get((role, *DEFAULT_VARIANT))
    distances = [] if default is None else [
        50 * (dist - default).abs().sum().item() for cell, dist in distribution.items()
        if cell[0] == role and cell[1:] != DEFAULT_VARIANT]
    role_hits = [hit for cell, cell_hits in hits.items() if cell[0] == role for hit in cell_hits]
    unseen = sorted({cell[1] for cell, indices in rows.items() if cell[0] == role
                     and any(meta[i].get("seen") is False for i in indices)}, key=GENDERS.index)
    return {"skin_tone_spread": _mean(tone_spreads), "gender_spread": _mean(gender_spreads),
            "tv_from_default": _mean(distances), "top1": 100 * sum(role_hits) / len(role_hits),
            "p_true": _mean([p for line in grid for p in line]), "p_true_grid": grid,
            "variants": sum(p is not None for line in grid for p in line), "unseen_genders": unseen}


def _spread(values: list[float | None]) -> float | None:
    """max − min of the values present, or None with fewer than two."""
    present = [value for value in values if value is not None]
    return max(present) - min(present) if len(present) > 1 else None


def _mean(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return sum(present) / len(present) if present else None


def _rate(hits: dict, part: int, value: str) -> float | None:
    """Top-1 in percent over the cells (role, gender, tone) whose `part` is `value`."""
    selected = [hit for cell, cell_hits in hits.items() if cell[part] == value for hit in cell_hits]
    return 100 * sum(selected) / len(selected) if selected else None
