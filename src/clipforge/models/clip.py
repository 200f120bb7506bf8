"""CLIP: an image tower and a text tower mapped into one space, compared by cosine similarity
scaled by a learned temperature. The model carries the tokenizer its text tower reads."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..text import NgramTokenizer, Tokenizer
from .config import CLIPConfig, TextConfig
from .convnet import ConvNet
from .modified_resnet import ModifiedResNet
from .ngram_text import NgramBagText
from .text_transformer import TextTransformer
from .vision_transformer import VisionTransformer

MAX_LOGIT_SCALE = math.log(100.0)
AnyTokenizer = Tokenizer | NgramTokenizer


class CLIPOutput(NamedTuple):
    image_features: torch.Tensor  # [n_images, embed_dim], unit norm
    text_features: torch.Tensor  # [n_texts, embed_dim], unit norm
    logits_per_image: torch.Tensor  # [n_images, n_texts], cosine * exp(logit_scale) (+ logit_bias)

    @property
    def logits_per_text(self) -> torch.Tensor:
        return self.logits_per_image.t()


def similarity(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """Cosine similarity matrix [n_images, n_texts] of two feature batches (normalized here)."""
    return F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).t()


def build_image_tower(config: CLIPConfig) -> nn.Module:
    vision = config.vision
    if vision.kind == "ConvNet":
        return ConvNet(list(vision.channels), config.embed_dim, vision.image_size)
    if vision.kind == "ResNet":
        return ModifiedResNet(list(vision.layers), config.embed_dim, vision.num_heads, vision.image_size, vision.width)
    return VisionTransformer(vision.image_size, vision.patch_size, vision.width, vision.layers,
                             vision.num_heads, vision.mlp_ratio, config.embed_dim, config.activation)


def build_text_tower(config: CLIPConfig) -> nn.Module:
    text = config.text
    if text.kind == "ngram_bag":
        return NgramBagText(text.context_length, text.vocab_size, text.width, config.embed_dim, text.ngram_dropout)
    return TextTransformer(text.context_length, text.vocab_size, text.width, text.layers, text.num_heads,
                           text.mlp_ratio, config.embed_dim, config.activation)


def default_tokenizer(text: TextConfig) -> AnyTokenizer:
    """The tokenizer a text config names, when it needs no files: OpenAI's BPE or the n-gram hasher."""
    if text.tokenizer == "ngram":
        return NgramTokenizer(text.vocab_size)
    if text.tokenizer == "openai":
        return Tokenizer.openai()
    raise ValueError("this model was trained with its own vocabulary, which was not loaded with it: load the "
                     "model from its folder (clipforge.load(FOLDER)), which holds vocab.json and merges.txt")


def check_tokenizer_fits(tokenizer: AnyTokenizer, text: TextConfig) -> None:
    """Raise ValueError when `tokenizer`'s ids would not index the text tower's embedding table as trained."""
    hashing = isinstance(tokenizer, NgramTokenizer)
    if hashing != (text.kind == "ngram_bag"):
        raise ValueError(f"a {type(tokenizer).__name__} does not go with a {text.kind!r} text tower")
    if hashing and tokenizer.vocab_size != text.vocab_size:
        raise ValueError(f"the n-gram tokenizer hashes into {tokenizer.vocab_size} buckets but the text tower "
                         f"has {text.vocab_size} rows: every id would mean another n-gram")
    if tokenizer.vocab_size > text.vocab_size:
        raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens but the text tower's embedding table "
                         f"has {text.vocab_size} rows: its highest ids would not fit")


class CLIP(nn.Module):
    """`visual` (ViT, ModifiedResNet or ConvNet) and `text` (Transformer or bag of n-grams), as the
    config says, with the temperature (`logit_scale`, and `logit_bias` for sigmoid-loss models).

    `tokenizer` is the one the text tower was trained with; `tokenize(texts)` gives its ids at the
    model's context length. OpenAI's state-dict layout (text tower at the top level) is a matter of
    the checkpoint files, mapped in `clipforge.checkpoints.keys`.
    """

    def __init__(self, config: CLIPConfig, tokenizer: AnyTokenizer | None = None):
        super().__init__()
        self.config = config
        self.visual = build_image_tower(config)
        self.text = build_text_tower(config)
        self.logit_scale = nn.Parameter(torch.empty(()))
        self.logit_bias = nn.Parameter(torch.empty(())) if config.init_logit_bias is not None else None
        self._tokenizer: AnyTokenizer | None = None
        if tokenizer is not None:
            self.tokenizer = tokenizer
        if not self.logit_scale.is_meta:
            self.init_parameters()

    @torch.no_grad()
    def init_parameters(self) -> None:
        self.visual.init_parameters()
        self.text.init_parameters()
        self.logit_scale.fill_(self.config.init_logit_scale)
        if self.logit_bias is not None:
            self.logit_bias.fill_(self.config.init_logit_bias)

    @property
    def tokenizer(self) -> AnyTokenizer:
        """Built from the config on first use when none was given (OpenAI's BPE takes about a second)."""
        if self._tokenizer is None:
            self.tokenizer = default_tokenizer(self.config.text)
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, tokenizer: AnyTokenizer) -> None:
        """A BPE vocabulary other than OpenAI's makes the model one with its own vocabulary
        (config text.tokenizer "bundled"), which `save_model` then writes beside the weights."""
        check_tokenizer_fits(tokenizer, self.config.text)
        if (isinstance(tokenizer, Tokenizer) and self.config.text.tokenizer == "openai"
                and tokenizer is not Tokenizer.openai()):
            self.config.text.tokenizer = "bundled"
        self._tokenizer = tokenizer

    @property
    def image_size(self) -> int:
        return self.config.vision.image_size

    @property
    def context_length(self) -> int:
        return self.config.text.context_length

    @property
    def vocab_size(self) -> int:
        return self.config.text.vocab_size

    def tokenize(self, texts: str | Sequence[str], truncate: bool = False) -> torch.Tensor:
        """Token ids [len(texts), context_length] int64 for this model's text tower, on the CPU."""
        return self.tokenizer(texts, context_length=self.context_length, truncate=truncate)

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """image: preprocessed [batch, 3, size, size] -> features [batch, embed_dim]."""
        features = self.visual(image)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_image_dense(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """image: [batch, 3, h, w], sides multiples of `visual.dense_stride` -> [batch, h / stride,
        w / stride, embed_dim]: one embedding per image location, comparable with text features
        (MaskCLIP's reading of each tower; see the towers' `forward_dense`)."""
        features = self.visual.forward_dense(image)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """text: token ids [batch, length <= context_length] -> features [batch, embed_dim]."""
        features = self.text(text)
        return F.normalize(features, dim=-1) if normalize else features

    def set_grad_checkpointing(self, enabled: bool = True) -> None:
        """Recompute transformer blocks in the backward pass instead of storing their activations."""
        for tower in (self.visual, self.text):
            if hasattr(tower, "transformer"):
                tower.transformer.grad_checkpointing = enabled

    def logit_scale_exp(self) -> torch.Tensor:
        """exp(logit_scale), never above 100 (the paper's clamp against training instability)."""
        return self.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Clamp the stored parameter too: called after each optimizer step."""
        self.logit_scale.clamp_(0, MAX_LOGIT_SCALE)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> CLIPOutput:
        image_features = self.encode_image(image, normalize=True)
        text_features = self.encode_text(text, normalize=True)
        logits = self.logit_scale_exp() * image_features @ text_features.t()
        if self.logit_bias is not None:
            logits = logits + self.logit_bias
        return CLIPOutput(image_features, text_features, logits)
