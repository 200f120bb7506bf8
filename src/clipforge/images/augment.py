"""Training-time augmentation, drawn from a per-sample RNG: the loader seeds it with (seed, epoch,
sample key), so a resumed run, any worker split and any number of ranks see exactly the same views.
Crops and grayscale work on the decoded picture; shifts on the preprocessed tensor, after the image
memo, so they cost no decoding."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps


@dataclass(frozen=True)
class TrainAugment:
    """A random crop of `crop_scale`..1 of the area (aspect 3/4..4/3), then grayscale with
    probability `grayscale`. No flips: a mirrored "leftwards arrow" would contradict its caption."""

    crop_scale: float = 0.5
    grayscale: float = 0.2

    def __post_init__(self) -> None:
        if not 0 < self.crop_scale <= 1:
            raise ValueError(f"crop_scale must be in (0, 1], got {self.crop_scale}")
        if not 0 <= self.grayscale <= 1:
            raise ValueError(f"grayscale must be in [0, 1], got {self.grayscale}")

    @property
    def is_identity(self) -> bool:
        return self.crop_scale == 1 and self.grayscale == 0

    def __call__(self, image: Image.Image, rng: random.Random) -> Image.Image:
        image = self._crop(image, rng)
        if rng.random() < self.grayscale:
            image = ImageOps.grayscale(image).convert(image.mode)
        return image

    def _crop(self, image: Image.Image, rng: random.Random) -> Image.Image:
        if self.crop_scale == 1:
            return image
        width, height = image.size
        area = width * height * rng.uniform(self.crop_scale, 1.0)
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        crop_width = min(width, max(1, round(math.sqrt(area * aspect))))
        crop_height = min(height, max(1, round(math.sqrt(area / aspect))))
        left = rng.randint(0, width - crop_width)
        top = rng.randint(0, height - crop_height)
        return image.crop((left, top, left + crop_width, top + crop_height))


def random_shift(image: torch.Tensor, max_shift: int, rng: random.Random) -> torch.Tensor:
    """A preprocessed image [3, S, S] moved by -max_shift..max_shift pixels on each axis, the edge
    pixels repeated into the gap. A few pixels on a 32 px icon is a different framing of the same
    picture, which is what the evaluation sets' other artists draw."""
    if max_shift <= 0:
        return image
    size = image.shape[-1]
    top, left = rng.randint(0, 2 * max_shift), rng.randint(0, 2 * max_shift)
    padded = F.pad(image[None], (max_shift,) * 4, mode="replicate")[0]
    return padded[:, top:top + size, left:left + size]
