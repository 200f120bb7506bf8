"""Model configuration as plain data: dataclasses that read and write the JSON configs.

The activation is a required field with no default: OpenAI's weights were trained with QuickGELU
and most OpenCLIP LAION weights with GELU, and picking the wrong one silently costs accuracy.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ACTIVATION_NAMES = ("quick_gelu", "gelu")
TEXT_KINDS = ("transformer", "ngram_bag")
DEFAULT_LOGIT_SCALE = math.log(1 / 0.07)


@dataclass
class VisionConfig:
    """`layers` as an int builds a VisionTransformer; a list of four stage depths a ModifiedResNet;
    `channels` (one entry per convolution, no `layers` or `width`) a plain ConvNet."""

    image_size: int
    width: int = 0
    layers: int | list[int] = 0
    patch_size: int | None = None
    heads: int | None = None
    mlp_ratio: float = 4.0
    channels: list[int] | None = None

    @property
    def kind(self) -> str:
        if self.channels:
            return "ConvNet"
        return "ResNet" if self.is_resnet else "ViT"

    @property
    def is_resnet(self) -> bool:
        return isinstance(self.layers, (list, tuple))

    @property
    def num_heads(self) -> int:
        if self.heads is not None:
            return self.heads
        # OpenAI: 64 channels per head; the ResNet's attention pool works on 32x the stem width.
        return max(1, (self.width * 32 if self.is_resnet else self.width) // 64)

    def validate(self) -> None:
        if self.channels is not None:
            if not self.channels or self.layers or self.width:
                raise ValueError("a ConvNet vision tower takes a non-empty `channels` list and no `layers` or `width`")
            if self.image_size % 2 ** (len(self.channels) - 1):
                raise ValueError(f"image_size {self.image_size} does not halve {len(self.channels) - 1} times")
            return
        if not self.layers or not self.width:
            raise ValueError("a vision tower needs `layers` and `width` (or `channels` for a plain ConvNet)")
        if self.is_resnet:
            if len(self.layers) != 4:
                raise ValueError(f"a ResNet vision tower needs 4 stage depths, got {self.layers}")
            if self.image_size % 32:
                raise ValueError(f"ResNet image_size must be a multiple of 32, got {self.image_size}")
        else:
            if not self.patch_size:
                raise ValueError("a ViT vision tower needs patch_size")
            if self.image_size % self.patch_size:
                raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")


@dataclass
class TextConfig:
    """`kind` "transformer" is CLIP's text tower; "ngram_bag" the bag of hashed n-grams, whose
    `vocab_size` is the number of hash buckets and `context_length` the most n-grams read per text.

    `tokenizer` is "openai" for the published BPE vocabulary, "bundled" when the model folder
    carries its own vocab.json + merges.txt, and "ngram" (hashing, no files) for "ngram_bag"."""

    kind: str = "transformer"
    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    layers: int = 12
    heads: int | None = None
    mlp_ratio: float = 4.0
    tokenizer: str = "openai"
    ngram_dropout: float = 0.0  # "ngram_bag" only: the chance that training leaves out each n-gram

    @property
    def num_heads(self) -> int:
        return self.heads if self.heads is not None else max(1, self.width // 64)

    def validate(self) -> None:
        if self.kind not in TEXT_KINDS:
            raise ValueError(f"text kind must be one of {TEXT_KINDS}, got {self.kind!r}")
        if (self.kind == "ngram_bag") != (self.tokenizer == "ngram"):
            raise ValueError(f"a {self.kind} text tower cannot use the {self.tokenizer!r} tokenizer: "
                             f"\"ngram_bag\" goes with \"ngram\", and only it")
        if not 0 <= self.ngram_dropout < 1 or (self.ngram_dropout and self.kind != "ngram_bag"):
            raise ValueError(f"ngram_dropout must be in [0, 1) and is for \"ngram_bag\" towers, got {self.ngram_dropout}")


@dataclass
class CLIPConfig:
    embed_dim: int
    activation: str
    vision: VisionConfig
    text: TextConfig = field(default_factory=TextConfig)
    init_logit_scale: float = DEFAULT_LOGIT_SCALE
    init_logit_bias: float | None = None  # set for SigLIP-style models, which learn a bias too

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATION_NAMES:
            raise ValueError(f"activation must be one of {ACTIVATION_NAMES}, got {self.activation!r}")
        self.vision.validate()
        self.text.validate()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CLIPConfig":
        data = dict(data)
        if "activation" not in data:
            raise ValueError(
                "config has no 'activation': say 'quick_gelu' (OpenAI-trained weights) or 'gelu' "
                "(most OpenCLIP LAION weights); it cannot be inferred and a wrong one silently costs accuracy"
            )
        vision = _build(VisionConfig, data.pop("vision", None), "vision")
        text = _build(TextConfig, data.pop("text", {}), "text")
        return _build(cls, data, "model", vision=vision, text=text)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, path: str | Path) -> "CLIPConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")


def _build(kind: type, data: dict[str, Any] | None, section: str, **extra: Any) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"config section {section!r} must be an object, got {data!r}")
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown keys in {section} config: {unknown}; known: {sorted(known)}")
    try:
        return kind(**data, **extra)
    except TypeError as error:
        raise ValueError(f"bad {section} config: {error}") from None
