"""`load(name_or_path)`: one entry point for every checkpoint format, like `clip.load`."""

from __future__ import annotations

import json
import os
import re
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
from .hub import list_openclip_pretrained, load_from_hub, load_openclip_tag, split_hub_name, split_tagged_name
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


def list_pretrained(tags: bool = False) -> list[str]:
    """Published names as the config files spell them ("ViT-B-32"); `published_name` gives OpenAI's spelling.
    With `tags`, also open_clip's (architecture, tag) pairs as `load` reads them: "ViT-B-32:laion2b_s34b_b79k"."""
    names = sorted(pretrained_registry())
    return names + [f"{architecture}:{tag}" for architecture, tag in list_openclip_pretrained()] if tags else names


def published_name(name: str) -> str:
    """OpenAI's spelling of a published name: "ViT-B-32" -> "ViT-B/32", "ViT-L-14-336" -> "ViT-L/14@336px";
    `load` accepts both, and `canonical_name` maps this one back."""
    match = re.fullmatch(r"(ViT-[A-Za-z]+)-(\d+)(?:-(\d+))?", name)
    if match is None:
        return name
    family, patch, size = match.groups()
    return f"{family}/{patch}" + (f"@{size}px" if size else "")


def describe_pretrained() -> str:
    """The published names in both spellings, for messages: "RN50, ..., ViT-B/32 (ViT-B-32), ..."."""
    names = [(published_name(name), name) for name in list_pretrained()]
    return ", ".join(published if published == name else f"{published} ({name})" for published, name in names)


def load_model(name_or_path: str | os.PathLike, device: str | torch.device = "cpu", *,
               config: str | dict[str, Any] | CLIPConfig | None = None, activation: str | None = None,
               pretrained: str | None = None, revision: str | None = None) -> CLIP:
    """A model from a published name, a native or Hugging Face folder, a weights file (OpenAI
    TorchScript archive, OpenAI/OpenCLIP `.pt`/`.bin`/`.safetensors`), a Hub repo
    ("hf-hub:ORG/NAME", "@REVISION" or `revision=` to pin one) or an open_clip pair
    (`pretrained="laion2b_s34b_b79k"` with "ViT-B-32", or "ViT-B-32:laion2b_s34b_b79k").

    With no `config`, the architecture is read from the weights' shapes. The activation cannot
    be: OpenAI's archives and published names imply QuickGELU, Hub repos and open_clip tags carry
    theirs; other bare files need `activation=` ("quick_gelu" or "gelu") or a `config`.
    """
    return _load(name_or_path, device, config=config, activation=activation, pretrained=pretrained,
                 revision=revision)[0]


def _load(name_or_path: str | os.PathLike, device: str | torch.device = "cpu", *,
          config: str | dict[str, Any] | CLIPConfig | None = None, activation: str | None = None,
          pretrained: str | None = None, revision: str | None = None) -> tuple[CLIP, ImageTransform]:
    """(model, preprocess): a Hub repo or an open_clip tag brings its own preprocessing."""
    named = None if Path(name_or_path).exists() else _load_hub_or_tag(str(name_or_path), config, activation,
                                                                        pretrained, revision)
    if named is not None:
        return named[0].to(device).eval(), named[1]
    if pretrained is not None or revision is not None:
        raise ValueError(f"pretrained= and revision= go with an open_clip architecture or a hf-hub: name, not "
                         f"{str(name_or_path)!r}")
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
        raise FileNotFoundError(f"{name_or_path!s} is neither a file, a folder nor a published model; the "
                                f"published models are {describe_pretrained()} (and open_clip's pairs, "
                                "clipforge.list_pretrained(tags=True), or hf-hub:ORG/NAME)")
    return model.to(device).eval(), ImageTransform(model.image_size)


def _load_hub_or_tag(name: str, config: Any, activation: str | None, pretrained: str | None,
                     revision: str | None) -> tuple[CLIP, ImageTransform] | None:
    """A "hf-hub:" name, "ARCH:TAG" or ARCH with `pretrained`; None for any other name."""
    hub = split_hub_name(name)
    tagged = split_tagged_name(name) if hub is None else None
    if hub is None and tagged is None and pretrained is None:
        return None
    if config is not None:
        raise ValueError(f"{name!r} carries its own config: drop config=")
    if hub is not None:
        repo_id, pinned = hub
        if pretrained is not None:
            raise ValueError(f"{name!r} names its weights already: drop pretrained={pretrained!r}")
        if pinned and revision and pinned != revision:
            raise ValueError(f"{name!r} pins revision {pinned!r} but revision={revision!r} was passed")
        return load_from_hub(repo_id, pinned or revision, activation)
    if activation is not None:
        raise ValueError(f"open_clip's table gives {name!r}'s activation: drop activation=")
    if tagged is not None and pretrained is not None:
        raise ValueError(f"{name!r} names its tag already: drop pretrained={pretrained!r}")
    architecture, tag = tagged or (name, pretrained)
    return load_openclip_tag(architecture, tag, revision)


def load(name_or_path: str | os.PathLike, device: str | torch.device = "cpu", **options: Any) -> tuple[CLIP, ImageTransform]:
    """(model, preprocess), like `clip.load`: everything needed to use a model, since the model
    carries its tokenizer (`model.tokenize(texts)`); a Hub repo or an open_clip tag gives its own
    preprocessing (mean, std, size, interpolation). `options` are `load_model`'s."""
    return _load(name_or_path, device, **options)


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
