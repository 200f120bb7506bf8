"""The ViT image tower: patches -> class token + positions -> pre-LN transformer -> projection."""

from __future__ import annotations

import torch
from torch import nn

from .layers import Transformer


class VisionTransformer(nn.Module):
    def __init__(self, image_size: int, patch_size: int, width: int, layers: int, heads: int,
                 mlp_ratio: float, output_dim: int, activation: str):
        super().__init__()
        self.image_size = image_size
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(width))
        self.positional_embedding = nn.Parameter(torch.empty((image_size // patch_size) ** 2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, mlp_ratio, activation)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.empty(width, output_dim))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image: [batch, 3, size, size] -> features [batch, output_dim]."""
        x = self.conv1(image).flatten(2).transpose(1, 2)
        class_token = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([class_token, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0]) @ self.proj

    @torch.no_grad()
    def init_parameters(self) -> None:
        scale = self.class_embedding.shape[0] ** -0.5
        nn.init.normal_(self.class_embedding, std=scale)
        nn.init.normal_(self.positional_embedding, std=scale)
        nn.init.normal_(self.proj, std=scale)
        self.transformer.init_parameters()
