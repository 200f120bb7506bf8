"""The localization benchmark, `clipforge eval --task localization`: composite scenes built from a
labelled set's glyphs (OpenMoji's, which no built-in model trains on; `data.scenes`), and for each
map method (the towers' dense maps and the sliding-window crop baseline, `maps.py`):

- pointing game: how often the peak of a present object's map lies inside that object's box;
- box AP@0.5: PASCAL VOC's average precision (all-point interpolation), one class per prompt of the
  vocabulary, every prompt queried on every scene, so absent ones give false positives.

Chance beside them: a uniformly random point (the mean of box area / canvas area) and a detector
that knows the glyphs' sizes but not where they are (one random box per scene and prompt)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..data import SkipReport
from ..data.scenes import Scene, SceneObject, compose_scenes, cut_out
from ..images import ImageTransform
from ..models import CLIP
from .features import read_samples
from .maps import BOX_THRESHOLDS, METHODS, Box, boxes_from_maps, peak, prepare_image, similarity_maps
from .templates import load_templates
from .zeroshot import ZeroShotClassifier

DEFAULT_SPEC = {"label": "name", "templates": "emoji", "vocabulary": 40, "scenes": 300, "canvas": 128,
                "objects": [2, 4], "sizes": [0.22, 0.45]}
CHANCE_DRAWS = 20  # random-box detectors averaged for the AP chance level
IOU = 0.5


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1, ...) boxes."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def average_precision(detections: Sequence[tuple[int, Box]], truths: dict[int, list[Sequence[float]]],
                      threshold: float = IOU) -> float:
    """PASCAL VOC AP of one class: `detections` (scene index, box with score), `truths` scene index ->
    that class's boxes. Detections are taken best score first; each matches the unmatched true box it
    overlaps most if that IoU reaches `threshold`, else it is a false positive. The area under the
    precision-recall curve made monotone (all-point interpolation, VOC 2010 on). 0 with no detections."""
    total = sum(len(boxes) for boxes in truths.values())
    if total == 0:
        raise ValueError("average precision needs at least one true box")
    matched = {scene: [False] * len(boxes) for scene, boxes in truths.items()}
    hits = []
    for scene, box in sorted(detections, key=lambda item: -item[1].score):
        candidates = truths.get(scene, [])
        overlaps = [iou(box, truth) for truth in candidates]
        best = int(np.argmax(overlaps)) if overlaps else -1
        hit = best >= 0 and overlaps[best] >= threshold and not matched[scene][best]
        if hit:
            matched[scene][best] = True
        hits.append(hit)
    if not hits:
        return 0.0
    true_positives = np.cumsum(hits)
    recall = np.concatenate([[0.0], true_positives / total, [1.0]])
    precision = np.concatenate([[0.0], true_positives / np.arange(1, len(hits) + 1), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.nonzero(recall[1:] != recall[:-1])[0]
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def mean_average_precision(detections: dict[str, list[tuple[int, Box]]], scenes: Sequence[Scene]) -> float:
    """Mean over the classes present in some scene of `average_precision`, as a percentage."""
    truths: dict[str, dict[int, list[tuple[int, int, int, int]]]] = {}
    for index, scene in enumerate(scenes):
        for item in scene.objects:
            truths.setdefault(item.name, {}).setdefault(index, []).append(item.box)
    return 100.0 * float(np.mean([average_precision(detections.get(name, []), boxes)
                                  for name, boxes in truths.items()]))


def inside(point: tuple[int, int], item: SceneObject) -> bool:
    x, y = point
    return item.box[0] <= x < item.box[2] and item.box[1] <= y < item.box[3]


def read_glyphs(source: Any, label: str, limit: int | None = None) -> tuple[dict[str, Any], SkipReport]:
    """Name -> the first readable image with that name (metadata field `label`) of `source`."""
    skips = SkipReport()
    glyphs: dict[str, Any] = {}
    for sample in read_samples(source, skips, limit):
        name = sample.meta.get(label)
        if isinstance(name, str) and name.strip():
            glyphs.setdefault(name.strip(), sample.image)
    return glyphs, skips


def chance_figures(scenes: Sequence[Scene], vocabulary: Sequence[str], canvas: int, sizes: Sequence[float],
                   seed: int) -> dict[str, float]:
    """A uniformly random point's pointing game (exact), and the box AP of random boxes of the glyphs'
    sizes at random places with random scores, one per scene and prompt (mean of CHANCE_DRAWS)."""
    objects = [item for scene in scenes for item in scene.objects]
    pointing = 100.0 * float(np.mean([item.area / canvas**2 for item in objects]))
    rng = np.random.default_rng([seed, 2])
    draws = []
    for _ in range(CHANCE_DRAWS):
        detections: dict[str, list[tuple[int, Box]]] = {}
        for index in range(len(scenes)):
            for name in vocabulary:
                side = rng.uniform(*sizes) * canvas
                x, y = rng.uniform(0, canvas - side, size=2)
                detections.setdefault(name, []).append((index, Box(x, y, x + side, y + side, float(rng.random()))))
        draws.append(mean_average_precision(detections, scenes))
    return {"pointing_game": pointing, "box_AP@0.5": float(np.mean(draws))}


def localization_figures(model: CLIP, source: Any, spec: dict[str, Any] | None = None, seed: int = 0,
                         limit: int | None = None) -> dict[str, Any]:
    """Run the benchmark on the glyphs of `source` (labelled by the metadata field `spec["label"]`):
    `spec` as DEFAULT_SPEC (the vocabulary size, scene count and canvas, the prompts' templates; and
    optionally the maps' `short_side` and a `box_threshold` for both methods instead of each one's
    `BOX_THRESHOLDS`); `limit` reads only the first entries."""
    spec = {**DEFAULT_SPEC, **(spec or {})}
    glyph_images, skips = read_glyphs(source, spec["label"], limit)
    cut: dict[str, Any] = {}
    for name, image in sorted(glyph_images.items()):
        try:
            cut[name] = cut_out(image)
        except ValueError:
            skips.add("no glyph on a plain background", name)
    if len(cut) < max(spec["objects"]):
        raise ValueError(f"the localization scenes need at least {max(spec['objects'])} distinct "
                         f"{spec['label']!r} labels with a glyph; the source has {len(cut)}")
    rng = np.random.default_rng([seed, 1])
    vocabulary = sorted(rng.choice(sorted(cut), size=min(spec["vocabulary"], len(cut)), replace=False).tolist())
    canvas = spec["canvas"]
    scenes = compose_scenes([(cut[name], name) for name in vocabulary], spec["scenes"], seed, canvas=canvas,
                            objects=tuple(spec["objects"]), sizes=tuple(spec["sizes"]))
    classifier = ZeroShotClassifier(model, vocabulary, load_templates(spec["templates"]))
    text = classifier.class_embeddings
    index = {name: i for i, name in enumerate(vocabulary)}
    alone = torch.stack([ImageTransform(model.image_size)(glyph_images[name]) for name in vocabulary])
    with torch.no_grad():
        isolated = classifier.predict(model.encode_image(alone.to(text.device), normalize=True)).cpu()
    figures: dict[str, Any] = {
        "scenes": len(scenes), "objects": sum(len(scene.objects) for scene in scenes), "canvas": canvas,
        "vocabulary": vocabulary, "templates": str(spec["templates"]), "glyphs_read": len(glyph_images),
        "skipped": skips.as_dict(),
        "isolated_top1": 100.0 * float((isolated == torch.arange(len(vocabulary))).float().mean()),
        "chance": chance_figures(scenes, vocabulary, canvas, spec["sizes"], seed),
    }
    textured = torch.tensor([scene.background != "plain" for scene in scenes])
    for method in METHODS:
        threshold = spec.get("box_threshold") or BOX_THRESHOLDS[method]
        points: list[bool] = []
        owners: list[int] = []
        detections: dict[str, list[tuple[int, Box]]] = {}
        for number, scene in enumerate(scenes):
            pixels = prepare_image(scene.image, model, spec.get("short_side"))[None]
            scene_maps = similarity_maps(model, pixels, text, method, size=(canvas, canvas))[0]
            for item in scene.objects:
                points.append(inside(peak(scene_maps[index[item.name]]), item))
                owners.append(number)
            for name, boxes in zip(vocabulary, boxes_from_maps(scene_maps, threshold)):
                detections.setdefault(name, []).extend((number, box) for box in boxes)
        hit, on_texture = torch.tensor(points), textured[torch.tensor(owners)]
        figures[method] = {
            "pointing_game": 100.0 * float(hit.float().mean()),
            "pointing_game_plain": 100.0 * float(hit[~on_texture].float().mean()) if (~on_texture).any() else None,
            "pointing_game_textured": 100.0 * float(hit[on_texture].float().mean()) if on_texture.any() else None,
            "box_AP@0.5": mean_average_precision(detections, scenes),
            "box_threshold": threshold,
        }
    return figures
