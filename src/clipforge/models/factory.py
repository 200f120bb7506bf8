"""Create models by name from the JSON configs shipped in `configs/`."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from .clip import CLIP
from .config import CLIPConfig

_CONFIGS = resources.files(__package__) / "configs"


def canonical_name(name: str) -> str:
    """OpenAI spells names "ViT-B/32" and "ViT-L/14@336px"; config files "ViT-B-32", "ViT-L-14-336"."""
    return name.replace("/", "-").replace("@", "-").removesuffix("px")


def list_models() -> list[str]:
    return sorted(entry.name.removesuffix(".json") for entry in _CONFIGS.iterdir() if entry.name.endswith(".json"))


def get_config(name_or_config: str | os.PathLike | dict[str, Any] | CLIPConfig) -> CLIPConfig:
    """A config from a model name, a JSON file path, a dict or a CLIPConfig."""
    if isinstance(name_or_config, CLIPConfig):
        return name_or_config
    if isinstance(name_or_config, dict):
        return CLIPConfig.from_dict(name_or_config)
    path = Path(name_or_config)
    if path.suffix == ".json" and path.is_file():
        return CLIPConfig.from_json(path)
    name = canonical_name(str(name_or_config))
    entry = _CONFIGS / f"{name}.json"
    if not entry.is_file():
        raise ValueError(f"unknown model {str(name_or_config)!r}; known: {', '.join(list_models())} (or a path to a JSON config)")
    return CLIPConfig.from_json(entry)


def create_model(name_or_config: str | os.PathLike | dict[str, Any] | CLIPConfig,
                 device: str | torch.device | None = None) -> CLIP:
    """A freshly initialised model (CLIP's initialisation scheme), in float32 and eval mode.

    Under `torch.device("meta")` the parameters are left unallocated, which is how checkpoint
    loading builds a model without paying for a random initialisation it would overwrite. The
    tokenizer is the config's (OpenAI's BPE or the n-gram hasher), built on first use.
    """
    model = CLIP(get_config(name_or_config))
    if device is not None:
        model = model.to(device)
    return model.eval()
