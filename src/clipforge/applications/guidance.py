"""CLIP guidance: weighted prompts as a differentiable loss on an image tensor, for steering pixels
with CLIP's gradients (CLIP-guided diffusion, VQGAN+CLIP, CLIPDraw, `clipforge generate`).

Images are float tensors ``[n, 3, H, W]`` with values in [0, 1], of any size. They reach the model
through `preprocess_tensor`, the ordinary preprocessing (short side to the model's size, centre crop,
normalise) in differentiable form, or through seeded random `Cutouts`, as CLIP-guided diffusion scores
many crops of its image rather than the image itself: without them the optimisation finds adversarial
pixels that only the guiding model believes. The loss is plain autograd, so a sampler can call
``torch.autograd.grad(guidance(x).sum(), x)`` on its own images.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ..images import CLIP_MEAN, CLIP_STD
from ..images.transform import center_crop_box, resize_size
from ..models import CLIP
from .scores import check_prompts

LossName = Literal["spherical", "cosine"]


def resize(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubic resize [n, c, H, W] -> [n, c, height, width] with PIL's arithmetic, differentiably:
    an antialiased kernel (a = -0.5, widened by the scale when shrinking), the width resampled first
    and then the height, values clamped to [0, 1] after each pass as PIL's 8-bit passes clip."""
    if images.shape[-1] != width:
        images = F.interpolate(images, size=(images.shape[-2], width), mode="bicubic", antialias=True,
                               align_corners=False).clamp(0, 1)
    if images.shape[-2] != height:
        images = F.interpolate(images, size=(height, width), mode="bicubic", antialias=True,
                               align_corners=False).clamp(0, 1)
    return images


def normalize(images: torch.Tensor) -> torch.Tensor:
    """[n, 3, H, W] in [0, 1] -> (x - CLIP_MEAN) / CLIP_STD per channel."""
    mean = images.new_tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = images.new_tensor(CLIP_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def preprocess_tensor(images: torch.Tensor, size: int) -> torch.Tensor:
    """The ordinary preprocessing (`clipforge.images.ImageTransform`) of images [n, 3, H, W] in [0, 1],
    differentiable: short side to `size` (long side truncated), centre crop, normalise -> [n, 3, size, size].

    Tolerance against `ImageTransform` on the same 8-bit pixels: within 1.1 levels of 255 per pixel
    (0.016 in normalised units), 0.3 levels on average, for images without pixel-level noise (the
    difference is PIL's 8-bit rounding between and after its passes); on unblurred random noise
    isolated pixels can differ by up to ~12 levels (tests/test_guidance.py measures both).
    """
    _check_images(images)
    height, width = images.shape[-2:]
    new_width, new_height = resize_size(width, height, size)
    resized = resize(images.clamp(0, 1), new_height, new_width)
    left, top, right, bottom = center_crop_box(new_width, new_height, size)
    return normalize(resized[..., top:bottom, left:right])


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a float tensor [n, 3, H, W] with values in [0, 1], got {shape}")
    if not images.is_floating_point():
        raise ValueError(f"images must be floating point in [0, 1], got {images.dtype}")
    if images.shape[0] == 0 or images.shape[-1] == 0 or images.shape[-2] == 0:
        raise ValueError(f"images must not be empty, got {tuple(images.shape)}")


class Cutouts:
    """Seeded random square crops of an image batch, each resized to the model's input, with optional
    flips and noise: the views CLIP-guided diffusion scores instead of the whole image.

    A crop's side is ``short * (min_fraction + (max_fraction - min_fraction) * u ** power)`` for u
    uniform in [0, 1) and `short` the image's shorter side (power > 1 favours small crops), at a uniform
    position. Each crop is flipped left-right with probability `flip`, and gets Gaussian noise of a
    standard deviation uniform in [0, noise). The same crops are cut from every image of a batch.
    Successive calls draw new crops; the sequence is fixed by `seed`.
    """

    def __init__(self, count: int = 32, min_fraction: float = 0.5, max_fraction: float = 1.0, power: float = 1.0,
                 flip: float = 0.0, noise: float = 0.0, seed: int = 0):
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        if not 0 < min_fraction <= max_fraction <= 1:
            raise ValueError(f"need 0 < min_fraction <= max_fraction <= 1, got {min_fraction} and {max_fraction}")
        if power <= 0 or not 0 <= flip <= 1 or noise < 0:
            raise ValueError("power must be positive, flip a probability and noise at least 0")
        self.count, self.min_fraction, self.max_fraction, self.power = count, min_fraction, max_fraction, power
        self.flip, self.noise, self.seed = flip, noise, seed
        self.generator = torch.Generator().manual_seed(seed)

    def boxes(self, height: int, width: int) -> list[tuple[int, int, int]]:
        """`count` (top, left, side) squares drawn for an image of this size (advances the generator)."""
        short = min(height, width)
        draws = torch.rand(self.count, 3, generator=self.generator)
        boxes = []
        for u, v, w in draws.tolist():
            fraction = self.min_fraction + (self.max_fraction - self.min_fraction) * u ** self.power
            side = max(1, min(short, round(short * fraction)))
            boxes.append((int(v * (height - side + 1)), int(w * (width - side + 1)), side))
        return boxes

    def __call__(self, images: torch.Tensor, size: int) -> torch.Tensor:
        """images [n, 3, H, W] in [0, 1] -> cutouts [count, n, 3, size, size] in [0, 1] (noise may step
        outside; the model sees them normalised)."""
        _check_images(images)
        crops = [resize(images[..., top:top + side, left:left + side], size, size)
                 for top, left, side in self.boxes(*images.shape[-2:])]
        cutouts = torch.stack(crops)
        if self.flip > 0:
            flipped = torch.rand(self.count, generator=self.generator) < self.flip
            cutouts = torch.where(flipped.view(-1, 1, 1, 1, 1).to(cutouts.device), cutouts.flip(-1), cutouts)
        if self.noise > 0:
            scale = torch.rand(self.count, 1, 1, 1, 1, generator=self.generator) * self.noise
            noise = torch.randn(cutouts.shape, generator=self.generator) * scale
            cutouts = cutouts + noise.to(cutouts.device, cutouts.dtype)
        return cutouts

    def __repr__(self) -> str:
        return (f"Cutouts(count={self.count}, min_fraction={self.min_fraction}, max_fraction={self.max_fraction}, "
                f"power={self.power}, flip={self.flip}, noise={self.noise}, seed={self.seed})")


def spherical_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``2 * arcsin(|x - y| / 2) ** 2`` between unit vectors (normalised here), over the last dim,
    broadcasting: half the squared great-circle angle, 0 when equal, pi^2 / 2 when opposite."""
    chord = (F.normalize(x, dim=-1) - F.normalize(y, dim=-1)).norm(dim=-1)
    return 2 * (chord / 2).clamp(max=1).arcsin() ** 2


def cosine_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``1 - cos(x, y)`` over the last dim, broadcasting: 0 when aligned, 2 when opposite."""
    return 1 - (F.normalize(x, dim=-1) * F.normalize(y, dim=-1)).sum(dim=-1)


DISTANCES = {"spherical": spherical_distance, "cosine": cosine_distance}


@dataclass(frozen=True)
class WeightedPrompt:
    """A prompt and its weight: positive pulls the image towards it, negative pushes it away."""

    text: str
    weight: float = 1.0


def parse_weighted_prompt(spec: str) -> WeightedPrompt:
    """``"text"`` or ``"text:weight"`` (VQGAN+CLIP's notation): a number after the last colon is the
    weight; any other tail stays part of the text ("note: a red heart" is a prompt of weight 1)."""
    text, colon, tail = spec.rpartition(":")
    if colon:
        try:
            weight = float(tail)
        except ValueError:
            text, weight = spec, 1.0
    else:
        text, weight = spec, 1.0
    if not math.isfinite(weight):
        raise ValueError(f"the weight of {spec!r} is not a finite number")
    return WeightedPrompt(check_prompts([text])[0].strip(), weight)


def as_weighted_prompts(prompts: Sequence[str | WeightedPrompt | tuple[str, float]] | str) -> list[WeightedPrompt]:
    """Prompts given as strings ("text" or "text:weight"), (text, weight) pairs or WeightedPrompts."""
    if isinstance(prompts, (str, WeightedPrompt)):
        prompts = [prompts]
    weighted = []
    for prompt in prompts:
        if isinstance(prompt, WeightedPrompt):
            weighted.append(WeightedPrompt(check_prompts([prompt.text])[0], float(prompt.weight)))
        elif isinstance(prompt, str):
            weighted.append(parse_weighted_prompt(prompt))
        else:
            text, weight = prompt
            weighted.append(WeightedPrompt(check_prompts([text])[0], float(weight)))
    if not weighted:
        raise ValueError("give at least one prompt")
    if sum(abs(prompt.weight) for prompt in weighted) == 0:
        raise ValueError("every prompt has weight 0: at least one needs a non-zero weight")
    return weighted


class Guidance:
    """Weighted prompts as a loss on images [n, 3, H, W] in [0, 1]: per image, the weighted mean over
    prompts of the distance between each cutout's features and the prompt's, averaged over cutouts,
    ``sum_p w_p * mean_c d(f_c, t_p) / sum_p |w_p|``. Lower is closer to the positive prompts.

    The text features are computed once, without gradients. The model's weights are not changed and
    not frozen: take gradients with ``torch.autograd.grad(loss, inputs)`` (or freeze it) so that none
    accumulate in its parameters. The model should be in eval mode (its BatchNorm statistics fixed);
    `clipforge.load` returns it so.
    """

    def __init__(self, model: CLIP, prompts: Sequence[str | WeightedPrompt | tuple[str, float]] | str,
                 cutouts: Cutouts | None = None, loss: LossName = "spherical"):
        if loss not in DISTANCES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(DISTANCES)}")
        self.model, self.cutouts, self.loss_name = model, cutouts, loss
        self.prompts = as_weighted_prompts(prompts)
        device = model.logit_scale.device
        with torch.no_grad():
            tokens = model.tokenize([prompt.text for prompt in self.prompts], truncate=True).to(device)
            self.text_features = model.encode_text(tokens, normalize=True).float()  # [n_prompts, dim]
        self.weights = torch.tensor([prompt.weight for prompt in self.prompts], device=device)
        self.weights = self.weights / self.weights.abs().sum()

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """[views, n, dim] unit features of the views the loss scores: the cutouts, or the whole
        preprocessed image (views = 1) without them."""
        size = self.model.image_size
        if self.cutouts is None:
            views = preprocess_tensor(images, size).unsqueeze(0)
        else:
            views = self.cutouts(images, size)
            views = normalize(views.flatten(0, 1)).view(views.shape)
        count, n = views.shape[:2]
        features = self.model.encode_image(views.flatten(0, 1).to(self.text_features.device), normalize=True)
        return features.float().view(count, n, -1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Loss per image, [n]."""
        features = self.image_features(images)  # [views, n, dim]
        distances = DISTANCES[self.loss_name](features.unsqueeze(2), self.text_features)  # [views, n, prompts]
        return (distances.mean(dim=0) * self.weights).sum(dim=-1)

    def cosine(self, images: torch.Tensor) -> torch.Tensor:
        """[n, n_prompts] cosine of each whole image (ordinary preprocessing, no cutouts) with each prompt."""
        with torch.no_grad():
            features = self.model.encode_image(preprocess_tensor(images, self.model.image_size).to(
                self.text_features.device), normalize=True).float()
        return features @ self.text_features.t()
