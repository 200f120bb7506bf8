"""The text tower: token + position embeddings -> causal transformer -> features at end-of-text."""

from __future__ import annotations

import torch
from torch import nn

from .layers import Transformer

LENGTH_GROUP_SIZE = 64  # rows per length group: short enough to cut padding, long enough for efficient matmuls


class TextTransformer(nn.Module):
    """CLIP's text tower; `CLIP` holds it as `text`."""

    def __init__(self, context_length: int, vocab_size: int, width: int, layers: int, heads: int,
                 mlp_ratio: float, output_dim: int, activation: str):
        super().__init__()
        self.context_length = context_length
        self.vocab_size = vocab_size
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.transformer = Transformer(width, layers, heads, mlp_ratio, activation)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, output_dim))

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        """text: token ids [batch, length <= context_length] -> features [batch, output_dim].

        Features are read at the end-of-text token, the highest id in every CLIP vocabulary, so
        `argmax` finds it (as OpenAI's code does); the causal mask keeps padding from leaking in.
        Under that mask nothing after a row's end token reaches its features, so rows are sorted by
        length and encoded `LENGTH_GROUP_SIZE` at a time, each group cut after its longest row: the
        same features to float rounding, for a fraction of the work on captions far shorter than
        the context, at the cost of one host sync.
        """
        if text.shape[-1] > self.context_length:
            raise ValueError(f"text has {text.shape[-1]} tokens; this model takes at most {self.context_length}")
        eot = text.argmax(dim=-1)
        order = eot.argsort()
        sorted_lengths = (eot[order] + 1).tolist()
        starts = range(0, len(text), LENGTH_GROUP_SIZE)
        groups = [self._features_at_end(text[rows, : sorted_lengths[start + len(rows) - 1]], eot[rows])
                  for start, rows in zip(starts, order.split(LENGTH_GROUP_SIZE))]
        if not groups:  # an empty batch
            return self.text_projection.new_zeros(0, self.text_projection.shape[1])
        return torch.cat(groups)[order.argsort()]

    def _features_at_end(self, text: torch.Tensor, eot: torch.Tensor) -> torch.Tensor:
        """text [batch, length] whose end tokens sit at positions `eot` [batch] -> [batch, output_dim]."""
        x = self.token_embedding(text) + self.positional_embedding[: text.shape[-1]].to(self.token_embedding.weight.dtype)
        x = self.ln_final(self.transformer(x, causal=True))
        return x[torch.arange(x.shape[0], device=x.device), eot] @ self.text_projection

    @torch.no_grad()
    def init_parameters(self) -> None:
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=self.transformer.width**-0.5)
        self.transformer.init_parameters()
