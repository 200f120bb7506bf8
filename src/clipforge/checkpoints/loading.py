"""`load(name_or_path)`: one entry point for every checkpoint format, like `clip.load`."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ..images import ImageTransform
from ..models import CLIP, CLIPConfig, get_config, list_models
from ..models.clip import default_tokenizer
from ..models.factory import canonical_name
from ..text import NgramTokenizer, Tokenizer
from ..core.download import fetch
from .huggingface import is_huggingface_state_dict, read_huggingface_folder, state_dict_from_huggingface
from .native import is_native_folder, load_native_folder
from .state_dict import CheckpointError, infer_config, model_from_state_dict, read_weights


@dataclass(frozen=True)
class PretrainedWeights:
    url: str
    sha256: str
    config: str  # name of the model config the weights belong to


def pretrained_registry() -> dict[str, PretrainedWeights]:
    """Published weights by name, read from `pretrained.json`."""
    entries = json.loads((resources.files(__package__) / "pretrained.json").read_text())
    return {name: PretrainedWeights(**entry) for name, entry in entries.items()}


def list_pretrained() -> list[str]:
    return sorted(pretrained_registry())


def load_model(name_or_path: str | os.PathLike, device: str | torch.device = "cpu", *,
               config: str | dict[str, Any] | CLIPConfig | None = None, activation: str | None = None) -> CLIP:
    """A model from a published name, a native or Hugging Face folder, or a weights file
    (OpenAI TorchScript archive, OpenAI/OpenCLIP `.pt`/`.bin`/`.safetensors`).

    With no `config`, the architecture is read from the weights' shapes. The activation cannot
    be: OpenAI's archives and published names imply QuickGELU; other bare files need
    `activation=` ("quick_gelu" or "gelu") or a `config`.
    """
    path = Path(name_or_path)
    registry = pretrained_registry()
    name = canonical_name(str(name_or_path))
    if not path.exists() and name in registry:
        entry = registry[name]
        path = fetch(entry.url, entry.sha256, filename=f"{name}.pt")
        config = config if config is not None else entry.config
    if path.is_dir():
        model = _load_folder(path)
    elif path.is_file():
        model = _load_file(path, config, activation)
    else:
        raise FileNotFoundError(f"{name_or_path!s} is neither a file, a folder nor a published model "
                                f"({', '.join(sorted(registry))})")
    return model.to(device).eval()


def load(name_or_path: str | os.PathLike, device: str | torch.device = "cpu", **options: Any) -> tuple[CLIP, ImageTransform]:
    """(model, preprocess), like `clip.load`: everything needed to use a model, since the model
    carries its tokenizer (`model.tokenize(texts)`). `options` go to `load_model`."""
    model = load_model(name_or_path, device, **options)
    return model, ImageTransform(model.image_size)


def get_tokenizer(model_or_name: CLIP | str | os.PathLike | None = None) -> Tokenizer | NgramTokenizer:
    """The tokenizer of a model, a model's name or path (loaded as `load_model` does), or OpenAI's
    BPE when given nothing. Prefer `model.tokenizer` when the model is at hand."""
    if model_or_name is None:
        return Tokenizer.openai()
    if isinstance(model_or_name, CLIP):
        return model_or_name.tokenizer
    name = canonical_name(str(model_or_name))
    if not Path(model_or_name).exists() and name in list_models():  # a config name: no weights to read
        return default_tokenizer(get_config(name).text)
    return load_model(model_or_name).tokenizer


def _load_folder(folder: Path) -> CLIP:
    if is_native_folder(folder):
        return load_native_folder(folder)
    if (folder / "config.json").is_file() and json.loads((folder / "config.json").read_text()).get("model_type") == "clip":
        return model_from_state_dict(*read_huggingface_folder(folder))
    raise CheckpointError(f"{folder} is neither a clipforge model folder nor a Hugging Face CLIP folder (config.json)")


def _load_file(path: Path, config: Any, activation: str | None) -> CLIP:
    state, kind = read_weights(path)
    if is_huggingface_state_dict(state):
        state = state_dict_from_huggingface(state)
    if config is not None:
        resolved = get_config(config)
    else:
        if activation is None and kind == "torchscript":
            activation = "quick_gelu"  # only OpenAI publishes TorchScript CLIP archives
        if activation is None:
            raise CheckpointError(
                f"{path.name} has no config, and the activation cannot be read from weights: pass "
                "activation='quick_gelu' (OpenAI-trained weights, OpenCLIP '-quickgelu' models) or "
                "activation='gelu' (most OpenCLIP LAION weights), or config=<model name or JSON>")
        resolved = infer_config(state, activation)
    return model_from_state_dict(resolved, state)
