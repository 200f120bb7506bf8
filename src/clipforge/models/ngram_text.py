"""The bag-of-n-grams text tower: the mean of hashed word, word-pair and character-trigram
embeddings, normalized and projected. It has no order beyond bigrams and no attention, so it costs
almost nothing to run, and its trigrams let it read words it never saw in training."""

from __future__ import annotations

import torch
from torch import nn


class NgramBagText(nn.Module):
    """`token_embedding` row 0 is padding and stays zero; ids come from `NgramTokenizer`."""

    def __init__(self, context_length: int, vocab_size: int, width: int, output_dim: int, dropout: float = 0.0):
        super().__init__()
        self.context_length = context_length
        self.dropout = dropout
        self.vocab_size = vocab_size
        self.token_embedding = nn.Embedding(vocab_size, width, padding_idx=0)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, output_dim))

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        """text: n-gram ids [batch, length <= context_length], 0-padded -> features [batch, output_dim].
        A text with no n-grams (an empty caption) gets the features of an all-zero bag."""
        if text.shape[-1] > self.context_length:
            raise ValueError(f"text has {text.shape[-1]} n-grams; this model takes at most {self.context_length}")
        present = text > 0
        if self.training and self.dropout:  # drop whole n-grams: a caption is still readable from the rest
            present &= torch.rand(text.shape, device=text.device) >= self.dropout
        present = present.unsqueeze(-1).to(self.token_embedding.weight.dtype)
        bag = (self.token_embedding(text) * present).sum(dim=1) / present.sum(dim=1).clamp(min=1)
        return self.ln_final(bag) @ self.text_projection

    @torch.no_grad()
    def init_parameters(self) -> None:
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        self.token_embedding.weight[0].zero_()
        nn.init.normal_(self.text_projection, std=self.token_embedding.embedding_dim**-0.5)
