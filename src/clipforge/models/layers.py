"""Transformer building blocks shared by the vision and text towers.

Parameter names follow the OpenAI / OpenCLIP layout (`attn.in_proj_weight`, `mlp.c_fc`, `ln_1`, ...)
so their checkpoints load without renaming, but every tensor is batch-first and attention runs
through `F.scaled_dot_product_attention`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the activation OpenAI's CLIP models were trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {"quick_gelu": QuickGELU, "gelu": nn.GELU}


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class SelfAttention(nn.Module):
    """Multi-head self-attention with a packed q/k/v projection, batch-first."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by {heads} heads")
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        """x: [batch, tokens, width] -> [batch, tokens, width]."""
        batch, tokens, width = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(batch, tokens, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out_proj(out.transpose(1, 2).reshape(batch, tokens, width))


class MLP(nn.Module):
    def __init__(self, width: int, hidden: int, activation: str):
        super().__init__()
        self.c_fc = nn.Linear(width, hidden)
        self.gelu = make_activation(activation)
        self.c_proj = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, activation: str):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = MLP(width, int(width * mlp_ratio), activation)

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), causal=causal)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float, activation: str):
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.ModuleList(
            ResidualAttentionBlock(width, heads, mlp_ratio, activation) for _ in range(layers)
        )
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        """x: [batch, tokens, width]; `causal` masks attention to earlier tokens (text tower)."""
        for block in self.resblocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(block, x, causal, use_reentrant=False)
            else:
                x = block(x, causal=causal)
        return x

    @torch.no_grad()
    def init_parameters(self) -> None:
        """CLIP's scheme: attention std width^-1/2, MLP input (2 width)^-1/2, and residual output
        projections further scaled by (2 layers)^-1/2 so the residual stream's variance stays
        bounded with depth."""
        attn_std = self.width**-0.5
        proj_std = attn_std * (2 * self.layers) ** -0.5
        fc_std = (2 * self.width) ** -0.5
        for block in self.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.zeros_(block.attn.in_proj_bias)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.zeros_(block.attn.out_proj.bias)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.zeros_(block.mlp.c_fc.bias)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
            nn.init.zeros_(block.mlp.c_proj.bias)


def default_heads(width: int) -> int:
    """OpenAI's convention: one head per 64 channels."""
    return max(1, width // 64)
