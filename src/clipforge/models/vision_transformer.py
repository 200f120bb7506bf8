"""The ViT image tower: patches -> class token + positions -> pre-LN transformer -> projection.

Beside `forward` (the image embedding), `forward_intermediates` gives every layer's tokens and
`forward_dense` one joint-space embedding per patch (MaskCLIP's value path), for localization and
for multimodal models."""

from __future__ import annotations

import torch
import torch.nn.functional as F
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

    @property
    def dense_stride(self) -> int:
        """Input pixels per token along each side (the patch size)."""
        return self.conv1.stride[0]

    def embed(self, image: torch.Tensor) -> torch.Tensor:
        """image: [batch, 3, h, w], sides multiples of the patch size -> [batch, 1 + patches, width]:
        the class token and the patches with their positions, after `ln_pre` (transformers'
        `hidden_states[0]`). Another grid than the trained one gets the positions interpolated."""
        x = self.conv1(image)
        grid = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)
        class_token = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        return self.ln_pre(torch.cat([class_token, x], dim=1) + self.positions(grid).to(x.dtype))

    def positions(self, grid: tuple[int, int]) -> torch.Tensor:
        """[1 + grid_h * grid_w, width]: the learnt positions, bicubically resampled (as open_clip and
        timm do) when the grid is not the trained square."""
        trained = self.image_size // self.dense_stride
        if tuple(grid) == (trained, trained):
            return self.positional_embedding
        patches = self.positional_embedding[1:].reshape(1, trained, trained, -1).permute(0, 3, 1, 2)
        patches = F.interpolate(patches.float(), size=tuple(grid), mode="bicubic", align_corners=False)
        patches = patches.to(self.positional_embedding.dtype).permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)
        return torch.cat([self.positional_embedding[:1], patches])

    def forward_intermediates(self, image: torch.Tensor) -> list[torch.Tensor]:
        """layers + 1 hidden states [batch, 1 + patches, width], as transformers' `output_hidden_states`:
        the embeddings after `ln_pre`, then each block's output (none through `ln_post`)."""
        x = self.embed(image)
        states = [x]
        for block in self.transformer.resblocks:
            x = block(x)
            states.append(x)
        return states

    def forward_dense(self, image: torch.Tensor) -> torch.Tensor:
        """image: [batch, 3, h, w] -> [batch, h / patch, w / patch, output_dim], one embedding per patch.
        MaskCLIP: the last block skips query-key attention; each token takes its own value projection,
        then the attention's output projection, `ln_post` and `proj`, as the class token does for the image."""
        x = self.embed(image)
        grid = (image.shape[-2] // self.dense_stride, image.shape[-1] // self.dense_stride)
        for block in self.transformer.resblocks[:-1]:
            x = block(x)
        last = self.transformer.resblocks[-1]
        width = x.shape[-1]
        values = F.linear(last.ln_1(x[:, 1:]), last.attn.in_proj_weight[2 * width:], last.attn.in_proj_bias[2 * width:])
        patches = self.ln_post(last.attn.out_proj(values)) @ self.proj
        return patches.reshape(x.shape[0], grid[0], grid[1], -1)

    @torch.no_grad()
    def init_parameters(self) -> None:
        scale = self.class_embedding.shape[0] ** -0.5
        nn.init.normal_(self.class_embedding, std=scale)
        nn.init.normal_(self.positional_embedding, std=scale)
        nn.init.normal_(self.proj, std=scale)
        self.transformer.init_parameters()
