"""Where in an image a prompt is: similarity maps from an image tower's dense features (MaskCLIP,
no training) or from sliding-window crops (the baseline every method is compared with), their
peaks, and boxes read from them.

It sits in `evaluation` because the localization benchmark measures it and `evaluation` may not
import `applications`; `clipforge.applications.localization` puts files, prompts and overlays
around it. A map is [height, width] with one value per pixel of the tower's input."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..images import CLIP_MEAN, CLIP_STD, to_rgb
from ..models import CLIP

METHODS = ("dense", "crops")
MIN_GRID = 14  # cells along the short side at least, as ViT-B/16 has at 224 px (the learnt positions of
# ViT and ResNet towers with a coarser grid are interpolated); measured on the benchmark's development scenes
MAX_ASPECT = 4.0  # a longer image is squeezed to this many short sides long
CROP_SCALES = (0.25, 0.4, 0.6)  # window sides, as fractions of the image's short side
CROP_OVERLAP = 0.5  # consecutive windows share this fraction of their side
BOX_RESOLUTION = 64  # boxes are read on the map shrunk to at most this many pixels a side
MAX_BOXES = 3  # per map, best first
# Each method's box threshold, chosen on the benchmark's development scenes (seed 1) among 0.3, 0.5 and 0.7
BOX_THRESHOLDS = {"dense": 0.3, "crops": 0.5}


class Box(NamedTuple):
    """Corners in pixels (x0, y0 inclusive; x1, y1 exclusive) and a score: how far the region's highest
    map value stands above the map's median."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float


def input_size(model: CLIP, width: int, height: int, short_side: int | None = None) -> tuple[int, int]:
    """(width, height) the image is resized to for its map: the short side `short_side` (default: the
    model's input size, or enough for `MIN_GRID` cells), both sides multiples of the tower's stride,
    the aspect ratio kept up to `MAX_ASPECT`."""
    if width < 1 or height < 1:
        raise ValueError(f"an image needs pixels, got {width}x{height}")
    stride = model.visual.dense_stride
    short = short_side or max(model.image_size, MIN_GRID * stride)
    short = max(stride, round(short / stride) * stride)
    aspect = min(max(width, height) / min(width, height), MAX_ASPECT)
    long = max(short, round(short * aspect / stride) * stride)
    return (short, long) if width <= height else (long, short)


def prepare_image(image: Image.Image, model: CLIP, short_side: int | None = None) -> torch.Tensor:
    """The whole image (no centre crop: every part of it gets a map value), resized bicubically to
    `input_size` and normalized as CLIP's preprocessing does: [3, height, width] float32."""
    image = to_rgb(image)
    size = input_size(model, image.width, image.height, short_side)
    pixels = np.asarray(image.resize(size, Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
    mean, std = np.array(CLIP_MEAN, dtype=np.float32), np.array(CLIP_STD, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(((pixels - mean) / std).transpose(2, 0, 1)))


def zero_pads(visual: nn.Module) -> bool:
    """Whether the tower's convolutions pad with zeros (ConvNet, ResNet; not a ViT's patch embedding)."""
    return any(isinstance(layer, nn.Conv2d) and any(layer.padding) for layer in visual.modules())


@torch.no_grad()
def dense_maps(model: CLIP, pixels: torch.Tensor, text_features: torch.Tensor,
               size: tuple[int, int] | None = None) -> torch.Tensor:
    """Cosine similarity of each location's dense embedding with each prompt: pixels [n, 3, h, w]
    (sides multiples of the tower's stride), text features [p, dim] -> [n, p, H, W], upsampled
    bilinearly from the tower's grid to `size` (H, W; default the input's).

    A tower whose convolutions pad with zeros sees the image with a margin of one cell of its own
    edge pixels, cut off again afterwards: its border cells would otherwise see the zeros, and on the
    benchmark's development scenes a third of the default model's peaks fell on the image's edge
    (pointing game 30 % without the margin, 48 % with it)."""
    device = model.logit_scale.device
    pixels = pixels.to(device, torch.float32)
    margin = model.visual.dense_stride if zero_pads(model.visual) else 0
    if margin:
        pixels = F.pad(pixels, (margin,) * 4, mode="replicate")
    cells = model.encode_image_dense(pixels, normalize=True)  # [n, gh, gw, dim]
    if margin:
        cells = cells[:, 1:-1, 1:-1]
    text = F.normalize(text_features.to(device, torch.float32), dim=-1)
    grid = torch.einsum("nhwd,pd->nphw", cells, text)
    size = size or (pixels.shape[-2] - 2 * margin, pixels.shape[-1] - 2 * margin)
    return F.interpolate(grid, size=size, mode="bilinear", align_corners=False).cpu()


def crop_windows(height: int, width: int, scales: Sequence[float] = CROP_SCALES,
                 overlap: float = CROP_OVERLAP) -> list[tuple[int, int, int, int]]:
    """Square windows (x0, y0, x1, y1) at each scale of the short side, `overlap` apart, the last of
    each row and column flush with the image's edge so that every pixel is covered."""
    if not scales or not 0 <= overlap < 1:
        raise ValueError(f"crop windows need scales and an overlap in [0, 1), got {scales} and {overlap}")
    windows = []
    for scale in scales:
        side = max(1, min(round(scale * min(height, width)), height, width))
        step = max(1, round(side * (1 - overlap)))

        def starts(length: int) -> list[int]:
            return sorted(set(list(range(0, length - side + 1, step)) + [length - side]))

        windows += [(x, y, x + side, y + side) for y in starts(height) for x in starts(width)]
    return windows


@torch.no_grad()
def crop_maps(model: CLIP, pixels: torch.Tensor, text_features: torch.Tensor, size: tuple[int, int] | None = None,
              scales: Sequence[float] = CROP_SCALES, overlap: float = CROP_OVERLAP,
              batch_size: int = 256) -> torch.Tensor:
    """The baseline: every sliding window (`crop_windows`) resized to the model's input and embedded
    whole; a pixel's value is the mean cosine of the windows that cover it. [n, 3, h, w] -> [n, p, H, W]."""
    device = model.logit_scale.device
    _, _, height, width = pixels.shape
    windows = crop_windows(height, width, scales, overlap)
    coverage = torch.zeros(len(windows), height, width, device=device)
    for number, (x0, y0, x1, y1) in enumerate(windows):
        coverage[number, y0:y1, x0:x1] = 1
    coverage = coverage / coverage.sum(dim=0)  # each pixel: the mean over the windows covering it
    text = F.normalize(text_features.to(device, torch.float32), dim=-1)
    out = []
    for image in pixels.to(device, torch.float32):
        crops = torch.cat([F.interpolate(image[None, :, y0:y1, x0:x1], size=(model.image_size,) * 2, mode="bicubic",
                                         align_corners=False, antialias=True) for x0, y0, x1, y1 in windows])
        features = torch.cat([model.encode_image(chunk, normalize=True) for chunk in crops.split(batch_size)])
        out.append(torch.einsum("wp,whx->phx", features @ text.t(), coverage))
    maps = torch.stack(out)
    return F.interpolate(maps, size=size or (height, width), mode="bilinear", align_corners=False).cpu()


def similarity_maps(model: CLIP, pixels: torch.Tensor, text_features: torch.Tensor, method: str = "dense",
                    size: tuple[int, int] | None = None) -> torch.Tensor:
    """[n, p, H, W] maps by `method`: "dense" (the tower's own locations) or "crops" (the baseline)."""
    if method == "dense":
        return dense_maps(model, pixels, text_features, size)
    if method == "crops":
        return crop_maps(model, pixels, text_features, size)
    raise ValueError(f"unknown map method {method!r}; expected one of {', '.join(METHODS)}")


def peak(value_map: torch.Tensor) -> tuple[int, int]:
    """(x, y) of the map's highest value [height, width]; the first in reading order on a tie."""
    index = int(value_map.flatten().argmax())
    return index % value_map.shape[-1], index // value_map.shape[-1]


def connected_components(mask: torch.Tensor) -> torch.Tensor:
    """Labels [n, h, w] int64 of the 4-connected regions of a boolean mask [n, h, w]: 0 outside it,
    and inside each region the same positive label. Union-find on all maps at once: each round hooks
    the higher root of every edge's two cells under the lower one, then compresses every path."""
    count, height, width = mask.shape
    cells = torch.arange(count * height * width).reshape(count, height, width)
    pairs = [(cells[:, :, :-1][mask[:, :, :-1] & mask[:, :, 1:]], cells[:, :, 1:][mask[:, :, :-1] & mask[:, :, 1:]]),
             (cells[:, :-1, :][mask[:, :-1, :] & mask[:, 1:, :]], cells[:, 1:, :][mask[:, :-1, :] & mask[:, 1:, :]])]
    first, second = torch.cat([a for a, _ in pairs]), torch.cat([b for _, b in pairs])
    parent = cells.flatten()
    while True:
        root_a, root_b = parent[first], parent[second]
        hooked = parent.scatter_reduce(0, torch.maximum(root_a, root_b), torch.minimum(root_a, root_b), "amin")
        while not torch.equal(hooked[hooked], hooked):
            hooked = hooked[hooked]
        if torch.equal(hooked, parent):
            break
        parent = hooked
    return torch.where(mask, parent.reshape(count, height, width) + 1, 0)


def boxes_from_maps(value_maps: torch.Tensor, threshold: float = 0.5, max_boxes: int = MAX_BOXES) -> list[list[Box]]:
    """Boxes around the regions of each map [n, height, width] above `threshold` of the way from the
    map's median (its typical background) to its highest value, 4-connected, read at `BOX_RESOLUTION`.
    A box's score is how far its region's highest value stands above the median, so that scores
    compare across images and prompts better than raw similarities do; best first, at most
    `max_boxes`. Coordinates are in the maps' pixels; a flat map gives the whole image at score 0.

    The median (rather than the minimum) and the contrast score were chosen on the benchmark's
    development scenes (seed 1); `BOX_THRESHOLDS` holds each method's threshold."""
    if not 0 < threshold < 1:
        raise ValueError(f"the box threshold is a fraction of the map's range, in (0, 1), got {threshold}")
    count, height, width = value_maps.shape
    small = value_maps.float()
    shrink = max(1.0, max(height, width) / BOX_RESOLUTION)
    if shrink > 1:
        small = F.interpolate(small[:, None], size=(max(1, round(height / shrink)), max(1, round(width / shrink))),
                              mode="area")[:, 0]
    rows, columns = small.shape[-2:]
    low, high = small.flatten(1).median(dim=1).values, small.amax(dim=(1, 2))
    mask = small >= (low + threshold * (high - low))[:, None, None]
    labels = connected_components(mask).flatten(1)  # [n, cells]: 0 outside the regions, unique across maps
    ys, xs = torch.meshgrid(torch.arange(rows), torch.arange(columns), indexing="ij")
    slots = count * rows * columns + 1
    index = labels.flatten()

    def reduce(values: torch.Tensor, how: str, start: float) -> torch.Tensor:
        return torch.full((slots,), start).scatter_reduce(0, index, values.flatten().float(), how)

    xs, ys = xs.expand(count, -1, -1), ys.expand(count, -1, -1)
    x0, y0 = reduce(xs, "amin", float("inf")), reduce(ys, "amin", float("inf"))
    x1, y1 = reduce(xs, "amax", -1.0), reduce(ys, "amax", -1.0)
    scores = reduce(small, "amax", float("-inf"))
    scale_x, scale_y = width / columns, height / rows
    found: list[list[Box]] = []
    for number in range(count):
        if high[number] <= low[number]:  # a flat map points nowhere in particular
            found.append([Box(0.0, 0.0, float(width), float(height), 0.0)])
            continue
        region = labels[number].unique()
        slot = region[region > 0].tolist()
        boxes = [Box(float(x0[i]) * scale_x, float(y0[i]) * scale_y, float(x1[i] + 1) * scale_x,
                     float(y1[i] + 1) * scale_y, float(scores[i] - low[number])) for i in slot]
        found.append(sorted(boxes, key=lambda box: -box.score)[:max_boxes])
    return found


def boxes_from_map(value_map: torch.Tensor, threshold: float = 0.5, max_boxes: int = MAX_BOXES) -> list[Box]:
    """`boxes_from_maps` of one map [height, width]."""
    return boxes_from_maps(value_map[None], threshold, max_boxes)[0]
