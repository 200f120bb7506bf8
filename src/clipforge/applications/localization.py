"""Open-vocabulary localization ("detect objects by name") for images and prompts: per image and
prompt a similarity map, its peak and boxes in the input image's own pixels, and overlays to look
at them. The maps and boxes are `clipforge.evaluation.maps`, the code the localization benchmark
measures (`clipforge eval --task localization`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from ..data import DEFAULT_MAX_PIXELS
from ..evaluation.features import encode_texts
from ..evaluation.maps import BOX_THRESHOLDS, MAX_BOXES, METHODS, Box, boxes_from_maps, peak, prepare_image, similarity_maps
from ..images import load_image, to_rgb
from ..models import CLIP
from .scores import check_prompts

# Viridis at five stops (as the web app's matrix colours cells), for the overlays
PALETTE = np.array([[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]], dtype=np.float32)


@dataclass
class Localization:
    """Where one prompt is in one image. `size` is the input image's (width, height); `peak` (x, y)
    and `boxes` (x0, y0, x1, y1, score; best first) are in its pixels; `map` [h, w] holds the cosine
    similarities at the resolution the tower saw the image (`size` squeezed to a multiple of its stride)."""

    image: str
    prompt: str
    size: tuple[int, int]
    peak: tuple[int, int]
    map: torch.Tensor
    boxes: list[Box] = field(default_factory=list)

    @property
    def peak_similarity(self) -> float:
        return float(self.map.max())

    def to_json(self) -> dict[str, Any]:
        """The line `clipforge locate --json` prints for this image and prompt."""
        return {"image": self.image, "prompt": self.prompt, "size": list(self.size), "peak": list(self.peak),
                "boxes": [[round(box.x0, 1), round(box.y0, 1), round(box.x1, 1), round(box.y1, 1), round(box.score, 4)]
                          for box in self.boxes]}


def checked_prompts(prompts: str | Sequence[str]) -> list[str]:
    """The prompts, stripped; ValueError when there are none or one is blank (`check_prompts`)."""
    return [prompt.strip() for prompt in check_prompts(prompts)]


class Locator:
    """One model's maps: `method` "dense" (the tower's locations, MaskCLIP) or "crops" (sliding
    windows, the baseline); `short_side` the pixels of the image's short side the tower sees
    (default: `evaluation.maps.input_size`'s); boxes from regions above `box_threshold` of the way
    from each map's median to its peak (default: the method's, `BOX_THRESHOLDS`; `boxes_from_maps`)."""

    def __init__(self, model: CLIP, method: str = "dense", short_side: int | None = None,
                 box_threshold: float | None = None, max_boxes: int = MAX_BOXES):
        if method not in METHODS:
            raise ValueError(f"unknown map method {method!r}; expected one of {', '.join(METHODS)}")
        if short_side is not None and short_side < 1:
            raise ValueError(f"the short side must be at least one pixel, got {short_side}")
        self.model, self.method, self.short_side = model.eval(), method, short_side
        self.box_threshold = BOX_THRESHOLDS[method] if box_threshold is None else box_threshold
        self.max_boxes = max_boxes

    def text_features(self, prompts: Sequence[str]) -> torch.Tensor:
        """[n_prompts, embed_dim] unit features of the prompts as given."""
        return encode_texts(self.model, checked_prompts(prompts))

    def locate(self, image: Image.Image, prompts: Sequence[str], name: str = "", boxes: bool = False,
               text_features: torch.Tensor | None = None) -> list[Localization]:
        """One `Localization` per prompt for a PIL image (`text_features` [n_prompts, dim], when given,
        stand for the prompts: a prompt ensemble, for example)."""
        prompts = checked_prompts(prompts)
        text = self.text_features(prompts) if text_features is None else text_features
        if len(text) != len(prompts):
            raise ValueError(f"{len(text)} text features for {len(prompts)} prompts")
        image = to_rgb(image)
        pixels = prepare_image(image, self.model, self.short_side)[None]
        value_maps = similarity_maps(self.model, pixels, text, self.method)[0]  # [p, h, w]
        found = boxes_from_maps(value_maps, self.box_threshold, self.max_boxes) if boxes else [[]] * len(prompts)
        scale_x, scale_y = image.width / value_maps.shape[-1], image.height / value_maps.shape[-2]
        results = []
        for prompt, value_map, regions in zip(prompts, value_maps, found):
            x, y = peak(value_map)
            results.append(Localization(
                name, prompt, (image.width, image.height),
                (min(int((x + 0.5) * scale_x), image.width - 1), min(int((y + 0.5) * scale_y), image.height - 1)),
                value_map,
                [Box(box.x0 * scale_x, box.y0 * scale_y, box.x1 * scale_x, box.y1 * scale_y, box.score)
                 for box in regions]))
        return results


def locate(model: CLIP, images: Sequence[Image.Image | str | os.PathLike], prompts: Sequence[str],
           boxes: bool = False, method: str = "dense", short_side: int | None = None) -> list[list[Localization]]:
    """Per image (a PIL image or a file), one `Localization` per prompt. Files are opened with
    `load_image` (a broken or huge file raises `ImageLoadError`, naming it)."""
    locator = Locator(model, method, short_side)
    text = locator.text_features(prompts)
    results = []
    for number, image in enumerate(images):
        name = f"image {number}" if isinstance(image, Image.Image) else os.fspath(image)
        opened = image if isinstance(image, Image.Image) else load_image(image, max_pixels=DEFAULT_MAX_PIXELS)
        results.append(locator.locate(opened, prompts, name, boxes, text))
    return results


def colourize(value_map: torch.Tensor) -> np.ndarray:
    """[h, w] values -> [h, w, 3] uint8 colours: the map's lowest value dark violet, its highest yellow."""
    values = value_map.float().numpy()
    low, high = float(values.min()), float(values.max())
    t = (values - low) / (high - low) if high > low else np.full_like(values, 0.5)
    position = t * (len(PALETTE) - 1)
    stop = np.minimum(position.astype(int), len(PALETTE) - 2)
    mix = (position - stop)[..., None]
    return np.rint(PALETTE[stop] * (1 - mix) + PALETTE[stop + 1] * mix).astype(np.uint8)


def render_overlay(image: Image.Image, localization: Localization, opacity: float = 0.55,
                   side: int | None = None) -> Image.Image:
    """The image with its map blended over it (`opacity` of the colours), the boxes outlined and the
    peak marked; scaled so that its longer side is `side` pixels when given."""
    image = to_rgb(image)
    scale = side / max(image.size) if side else 1.0
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    base = image.resize(size, Image.Resampling.BICUBIC) if scale != 1 else image.copy()
    heat = Image.fromarray(colourize(localization.map)).resize(size, Image.Resampling.BILINEAR)
    blended = Image.blend(base, heat, opacity)
    draw = ImageDraw.Draw(blended)
    width = max(1, round(max(size) / 150))
    for box in localization.boxes:
        draw.rectangle([box.x0 * scale, box.y0 * scale, box.x1 * scale - 1, box.y1 * scale - 1],
                       outline=(255, 255, 255), width=width)
    x, y = localization.peak[0] * scale, localization.peak[1] * scale
    radius = 2 * width + 1
    draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=(230, 30, 60), outline=(255, 255, 255))
    return blended


def overlay_sheet(images: Sequence[Image.Image], results: Sequence[Sequence[Localization]],
                  tile: int = 256) -> Image.Image:
    """One picture of every overlay: a row per image, a column per prompt, each prompt written under
    its tile."""
    if not images or not results or not results[0]:
        raise ValueError("an overlay sheet needs at least one image and one prompt")
    label_height = 18
    columns = len(results[0])
    sheet = Image.new("RGB", (columns * tile, len(images) * (tile + label_height)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for row, (image, found) in enumerate(zip(images, results)):
        for column, localization in enumerate(found):
            overlay = render_overlay(image, localization, side=tile)
            top = row * (tile + label_height)
            sheet.paste(overlay, (column * tile + (tile - overlay.width) // 2, top + (tile - overlay.height) // 2))
            text = localization.prompt if len(localization.prompt) <= 40 else localization.prompt[:39] + "…"
            draw.text((column * tile + 4, top + tile + 3), text, fill=(20, 20, 20))
    return sheet
