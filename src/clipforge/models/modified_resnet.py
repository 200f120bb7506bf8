"""CLIP's ResNet image tower: a 3-conv stem, anti-aliased strided bottlenecks (average pooling
before the stride instead of a strided convolution), and an attention-pooling head."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample = None
        if stride > 1 or inplanes != planes * self.expansion:
            # Keys "0" and "1" match the OpenAI checkpoints; "-1" is the parameter-free pool.
            self.downsample = nn.Sequential(OrderedDict([
                ("-1", nn.AvgPool2d(stride)),
                ("0", nn.Conv2d(inplanes, planes * self.expansion, 1, bias=False)),
                ("1", nn.BatchNorm2d(planes * self.expansion)),
            ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(self.avgpool(out)))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class AttentionPool2d(nn.Module):
    """Pools a feature map by letting its mean token attend over all positions."""

    def __init__(self, spatial_dim: int, embed_dim: int, heads: int, output_dim: int):
        super().__init__()
        self.heads = heads
        self.positional_embedding = nn.Parameter(torch.empty(spatial_dim**2 + 1, embed_dim))
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.c_proj = nn.Linear(embed_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [batch, channels, h, w] -> [batch, output_dim]."""
        x = x.flatten(2).transpose(1, 2)
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1) + self.positional_embedding.to(x.dtype)
        batch, tokens, width = x.shape
        head_dim = width // self.heads
        q = self.q_proj(x[:, :1]).view(batch, 1, self.heads, head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, tokens, self.heads, head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, tokens, self.heads, head_dim).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.c_proj(out.reshape(batch, width))

    def forward_dense(self, x: torch.Tensor) -> torch.Tensor:
        """x: [batch, channels, h, w] -> [batch, h, w, output_dim]: each position (with its positional
        embedding) through the value and output projections instead of being pooled (MaskCLIP). The
        pooled output is an attention-weighted mean of these, since both projections are affine."""
        grid = (x.shape[-2], x.shape[-1])
        tokens = x.flatten(2).transpose(1, 2) + self.spatial_positions(grid).to(x.dtype)
        return self.c_proj(self.v_proj(tokens)).reshape(x.shape[0], grid[0], grid[1], -1)

    def spatial_positions(self, grid: tuple[int, int]) -> torch.Tensor:
        """[grid_h * grid_w, channels]: the positions of the map's cells (not the mean token's),
        bicubically resampled when the grid is not the trained square."""
        positions = self.positional_embedding[1:]
        trained = round(positions.shape[0] ** 0.5)
        if tuple(grid) == (trained, trained):
            return positions
        square = positions.reshape(1, trained, trained, -1).permute(0, 3, 1, 2).float()
        resized = F.interpolate(square, size=tuple(grid), mode="bicubic", align_corners=False)
        return resized.to(positions.dtype).permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)


class ModifiedResNet(nn.Module):
    def __init__(self, layers: list[int], output_dim: int, heads: int, image_size: int, width: int):
        super().__init__()
        self.image_size = image_size
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        stages, inplanes = [], width
        for index, depth in enumerate(layers):
            planes, stride = width * 2**index, 1 if index == 0 else 2
            blocks = [Bottleneck(inplanes, planes, stride)]
            inplanes = planes * Bottleneck.expansion
            blocks += [Bottleneck(inplanes, planes) for _ in range(1, depth)]
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.attnpool = AttentionPool2d(image_size // 32, width * 32, heads, output_dim)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image: [batch, 3, size, size] -> features [batch, output_dim]."""
        x = F.relu(self.bn1(self.conv1(image)))
        x = F.relu(self.bn2(self.conv2(x)))
        x = self.avgpool(F.relu(self.bn3(self.conv3(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.attnpool(x)

    @property
    def dense_stride(self) -> int:
        """Input pixels per cell of the last feature map: the stem halves twice, stages 2-4 once each."""
        return 32

    def forward_intermediates(self, image: torch.Tensor) -> list[torch.Tensor]:
        """The stem's and each stage's feature map [batch, channels, h, w] (strides 4, 4, 8, 16, 32)."""
        x = F.relu(self.bn1(self.conv1(image)))
        x = F.relu(self.bn2(self.conv2(x)))
        states = [self.avgpool(F.relu(self.bn3(self.conv3(x))))]
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            states.append(stage(states[-1]))
        return states

    def forward_dense(self, image: torch.Tensor) -> torch.Tensor:
        """image: [batch, 3, h, w], sides multiples of 32 -> [batch, h / 32, w / 32, output_dim]."""
        return self.attnpool.forward_dense(self.forward_intermediates(image)[-1])

    @torch.no_grad()
    def init_parameters(self) -> None:
        """CLIP's scheme: attention-pool projections at std width^-1/2; the last BatchNorm of each
        bottleneck starts at zero so every residual block begins as the identity."""
        std = self.attnpool.c_proj.in_features**-0.5
        nn.init.normal_(self.attnpool.positional_embedding, std=std)
        for proj in (self.attnpool.q_proj, self.attnpool.k_proj, self.attnpool.v_proj, self.attnpool.c_proj):
            nn.init.normal_(proj.weight, std=std)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                nn.init.zeros_(block.bn3.weight)
