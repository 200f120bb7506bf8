"""CLIP: an image tower and the text tower mapped into one space, compared by cosine similarity
scaled by a learned temperature."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import CLIPConfig
from .convnet import ConvNet
from .modified_resnet import ModifiedResNet
from .ngram_text import NgramBagText
from .text_transformer import TextTransformer
from .vision_transformer import VisionTransformer

MAX_LOGIT_SCALE = math.log(100.0)


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


def build_vision_tower(config: CLIPConfig) -> nn.Module:
    vision = config.vision
    if vision.kind == "ConvNet":
        return ConvNet(list(vision.channels), config.embed_dim, vision.image_size)
    if vision.is_resnet:
        return ModifiedResNet(list(vision.layers), config.embed_dim, vision.num_heads, vision.image_size, vision.width)
    return VisionTransformer(vision.image_size, vision.patch_size, vision.width, vision.layers,
                             vision.num_heads, vision.mlp_ratio, config.embed_dim, config.activation)


class CLIPBase(nn.Module):
    """What every clipforge model has besides its text tower: the image tower under `visual.`, the
    learned temperature and the contrastive forward pass. The text tower comes from the class it
    is mixed with, whose parameters sit at the top level of the state dict. Code that takes any
    model (evaluation, search, the app, training) types it as `CLIPBase`."""

    config: CLIPConfig

    def _add_image_tower_and_temperature(self, config: CLIPConfig) -> None:
        self.config = config
        self.visual = build_vision_tower(config)
        self.logit_scale = nn.Parameter(torch.empty(()))
        self.logit_bias = nn.Parameter(torch.empty(())) if config.init_logit_bias is not None else None
        if not self.logit_scale.is_meta:
            self.init_parameters()

    @torch.no_grad()
    def init_parameters(self) -> None:
        super().init_parameters()
        self.visual.init_parameters()
        self.logit_scale.fill_(self.config.init_logit_scale)
        if self.logit_bias is not None:
            self.logit_bias.fill_(self.config.init_logit_bias)

    @property
    def image_size(self) -> int:
        return self.config.vision.image_size

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """image: preprocessed [batch, 3, size, size] -> features [batch, embed_dim]."""
        features = self.visual(image)
        return F.normalize(features, dim=-1) if normalize else features

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


class CLIP(CLIPBase, TextTransformer):
    """CLIP's text transformer at the top level and the image tower under `visual.`, exactly as in
    OpenAI's and OpenCLIP's state dicts."""

    def __init__(self, config: CLIPConfig):
        text = config.text
        TextTransformer.__init__(self, text.context_length, text.vocab_size, text.width, text.layers,
                                 text.num_heads, text.mlp_ratio, config.embed_dim, config.activation)
        self._add_image_tower_and_temperature(config)


class NgramCLIP(CLIPBase, NgramBagText):
    """An image tower with the bag-of-n-grams text tower."""

    def __init__(self, config: CLIPConfig):
        text = config.text
        NgramBagText.__init__(self, text.context_length, text.vocab_size, text.width, config.embed_dim, text.ngram_dropout)
        self._add_image_tower_and_temperature(config)


def build_clip(config: CLIPConfig) -> CLIPBase:
    """The model class a config describes, its parameters left unallocated under `torch.device("meta")`."""
    return NgramCLIP(config) if config.text.kind == "ngram_bag" else CLIP(config)
