"""Image generation on the CPU: optimise a small differentiable image parameterisation under CLIP
guidance (`guidance.Guidance`), as CLIPDraw optimises strokes and VQGAN+CLIP a latent.

Two parameterisations, both coarse or smooth so that they resist the adversarial pixel noise a
free pixel grid would take (docs/applications.md measures them under a judge model):

* `PixelImage`: a low-resolution RGB grid, upsampled bilinearly and squashed by a sigmoid;
* `SoftShapes`: soft-edged coloured ellipses composited in order over a white background (the
  built-in corpus's emoji and icons are flat shapes on white).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm

from ..models import CLIP
from .guidance import Cutouts, Guidance, LossName, WeightedPrompt


class PixelImage(nn.Module):
    """An RGB image [1, 3, size, size] in (0, 1): sigmoid of a `resolution` x `resolution` grid of
    logits, upsampled bilinearly. Starts near white with seeded noise (`noise` in logit units)."""

    default_lr = 0.1

    def __init__(self, size: int, resolution: int = 16, seed: int = 0, noise: float = 0.5, start: float = 2.0):
        super().__init__()
        if size < 1 or resolution < 1:
            raise ValueError(f"size and resolution must be positive, got {size} and {resolution}")
        generator = torch.Generator().manual_seed(seed)
        self.size = size
        self.logits = nn.Parameter(start + noise * torch.randn(1, 3, resolution, resolution, generator=generator))

    def forward(self) -> torch.Tensor:
        return torch.sigmoid(F.interpolate(self.logits, size=(self.size, self.size), mode="bilinear",
                                           align_corners=False))


class SoftShapes(nn.Module):
    """`count` ellipses with soft edges (a sigmoid of `sharpness` across the rim), each with a centre,
    two radii, an angle, a colour and an opacity, composited in order over white -> [1, 3, size, size].
    Starts from seeded random shapes at half opacity."""

    default_lr = 0.03

    def __init__(self, size: int, count: int = 24, seed: int = 0, sharpness: float = 20.0):
        super().__init__()
        if size < 1 or count < 1:
            raise ValueError(f"size and count must be positive, got {size} and {count}")
        generator = torch.Generator().manual_seed(seed)
        self.size, self.sharpness = size, sharpness
        self.centre = nn.Parameter(0.2 + 0.6 * torch.rand(count, 2, generator=generator))  # (x, y) in [0, 1]
        self.log_radii = nn.Parameter(math.log(0.12) + 0.3 * torch.randn(count, 2, generator=generator))
        self.angle = nn.Parameter(math.pi * torch.rand(count, generator=generator))
        self.colour = nn.Parameter(torch.randn(count, 3, generator=generator))  # logits
        self.opacity = nn.Parameter(torch.zeros(count))  # logits
        coordinates = (torch.arange(size, dtype=torch.float32) + 0.5) / size
        self.register_buffer("grid_y", coordinates.view(1, size, 1), persistent=False)
        self.register_buffer("grid_x", coordinates.view(1, 1, size), persistent=False)

    def forward(self) -> torch.Tensor:
        dx = self.grid_x - self.centre[:, 0].view(-1, 1, 1)  # [count, 1, size]
        dy = self.grid_y - self.centre[:, 1].view(-1, 1, 1)  # [count, size, 1]
        cos, sin = self.angle.cos().view(-1, 1, 1), self.angle.sin().view(-1, 1, 1)
        radii = self.log_radii.exp()
        u = (cos * dx + sin * dy) / radii[:, 0].view(-1, 1, 1)
        v = (cos * dy - sin * dx) / radii[:, 1].view(-1, 1, 1)
        rim = torch.sqrt(u ** 2 + v ** 2 + 1e-8)  # [count, size, size]: 1 on the ellipse's edge
        alpha = torch.sigmoid(self.sharpness * (1 - rim)) * torch.sigmoid(self.opacity).view(-1, 1, 1)
        colours = torch.sigmoid(self.colour)
        image = torch.ones(3, self.size, self.size, device=alpha.device)
        for shape_alpha, colour in zip(alpha, colours):
            image = image + shape_alpha * (colour.view(3, 1, 1) - image)
        return image.unsqueeze(0)


PARAMETERIZATIONS = {"pixels": PixelImage, "shapes": SoftShapes}


def make_parameterization(name: str, size: int, seed: int) -> nn.Module:
    """A fresh `PARAMETERIZATIONS[name]` image of side `size`, seeded."""
    if name not in PARAMETERIZATIONS:
        raise ValueError(f"unknown parameterisation {name!r}; choose one of {', '.join(PARAMETERIZATIONS)}")
    return PARAMETERIZATIONS[name](size, seed=seed)


@dataclass
class Generation:
    image: torch.Tensor  # [3, size, size] in [0, 1], the result
    start: torch.Tensor  # [3, size, size], the parameterisation before any step (the unguided start)
    losses: list[float]  # guidance loss at each step
    frames: list[torch.Tensor] = field(default_factory=list)  # [3, size, size] snapshots, start and end included


def generate(model: CLIP, prompts: Sequence[str | WeightedPrompt | tuple[str, float]] | str, *, size: int = 64,
             steps: int = 60, parameterization: str | nn.Module = "shapes", lr: float | None = None,
             cutout_count: int = 32, cutouts: Cutouts | None = None, loss: LossName = "spherical", seed: int = 0,
             frames: int = 0, progress: bool = False) -> Generation:
    """Optimise a `parameterization` image of side `size` for `steps` Adam steps on the guidance loss
    of `prompts` ("text", "text:weight", negative weights push away).

    The parameterisation is a name from `PARAMETERIZATIONS`, or any module whose forward() gives
    [1, 3, H, W] in [0, 1] (then `size` and `seed` do not shape it, and `lr` defaults to its
    `default_lr` or 0.05). The loss scores `cutout_count` crops of 60-100 % of the side with light
    noise, seeded by `seed` (0: the whole image, no cutouts), unless `cutouts` gives other ones.
    `frames` > 0 also keeps that many evenly spaced snapshots (plus the start)."""
    if steps < 0:
        raise ValueError(f"steps must be at least 0, got {steps}")
    if frames < 0:
        raise ValueError(f"frames must be at least 0, got {frames}")
    if cutout_count < 0:
        raise ValueError(f"cutout_count must be at least 0, got {cutout_count}")
    if cutouts is None and cutout_count:
        cutouts = Cutouts(count=cutout_count, min_fraction=0.6, max_fraction=1.0, noise=0.05, seed=seed)
    guidance = Guidance(model, prompts, cutouts=cutouts, loss=loss)
    device = model.logit_scale.device
    if isinstance(parameterization, nn.Module):
        image = parameterization.to(device)
    else:
        image = make_parameterization(parameterization, size, seed).to(device)
    optimizer = torch.optim.Adam(image.parameters(), lr=getattr(image, "default_lr", 0.05) if lr is None else lr)
    parameters = list(image.parameters())
    with torch.no_grad():
        start = image()[0].cpu()
    snapshots = [start] if frames else []
    every = {round(steps * (index + 1) / frames) for index in range(frames)} if frames else set()
    losses: list[float] = []
    description = "generating: " + ", ".join(prompt.text for prompt in guidance.prompts)
    with tqdm(range(1, steps + 1), desc=description[:60], unit="step", disable=not progress) as bar:
        for step in bar:
            value = guidance(image()).sum()
            gradients = torch.autograd.grad(value, parameters)  # nothing accumulates in the model
            for parameter, gradient in zip(parameters, gradients):
                parameter.grad = gradient
            optimizer.step()
            losses.append(float(value.detach()))
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            if step in every:
                with torch.no_grad():
                    snapshots.append(image()[0].cpu())
    with torch.no_grad():
        result = image()[0].cpu()
    return Generation(result, start, losses, snapshots)


def to_pil(image: torch.Tensor) -> Image.Image:
    """[3, H, W] in [0, 1] -> an RGB PIL image (values clipped, rounded to 8 bits)."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an image [3, H, W], got {tuple(image.shape)}")
    pixels = (image.detach().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(pixels, "RGB")


def contact_sheet(rows: Sequence[Sequence[torch.Tensor]], gap: int = 2, scale: int = 1) -> Image.Image:
    """Images [3, H, W] laid out in rows on white, `gap` pixels apart, each enlarged `scale` times
    (nearest neighbour); rows may differ in length."""
    if not rows or not any(rows):
        raise ValueError("a contact sheet needs at least one image")
    tiles = [[to_pil(image) for image in row] for row in rows]
    if scale > 1:
        tiles = [[tile.resize((tile.width * scale, tile.height * scale), Image.Resampling.NEAREST) for tile in row]
                 for row in tiles]
    height = max(tile.height for row in tiles for tile in row)
    width = max(sum(tile.width for tile in row) + gap * (len(row) - 1) for row in tiles)
    sheet = Image.new("RGB", (width, height * len(tiles) + gap * (len(tiles) - 1)), "white")
    for row_index, row in enumerate(tiles):
        x = 0
        for tile in row:
            sheet.paste(tile, (x, row_index * (height + gap)))
            x += tile.width + gap
    return sheet


def save_image(image: torch.Tensor, path: str | os.PathLike) -> None:
    """Write [3, H, W] in [0, 1] as an image file (format from the suffix)."""
    to_pil(image).save(path)
