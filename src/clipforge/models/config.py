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
DEFAULT_LOGIT_SCALE = math.log(1 / 0.07)


@dataclass
class VisionConfig:
    """`layers` as an int builds a VisionTransformer; a list of four stage depths a ModifiedResNet."""

    image_size: int
    width: int
    layers: int | list[int]
    patch_size: int | None = None
    heads: int | None = None
    mlp_ratio: float = 4.0

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
    """`tokenizer` is "openai" for the published BPE vocabulary, or "bundled" when the model
    folder carries its own vocab.json + merges.txt."""

    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    layers: int = 12
    heads: int | None = None
    mlp_ratio: float = 4.0
    tokenizer: str = "openai"

    @property
    def num_heads(self) -> int:
        return self.heads if self.heads is not None else max(1, self.width // 64)


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
