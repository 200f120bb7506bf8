"""The native model folder: `model.safetensors` + `config.json` (+ the tokenizer's vocab.json and
merges.txt when the model has its own vocabulary). Files are written under temporary names and
renamed into place, so a crash never leaves a half-written model that looks complete."""

from __future__ import annotations

import json
import os
from pathlib import Path

from safetensors.torch import load_file, save_file

from ..core.atomic import write_atomically
from ..models import CLIP, CLIPConfig
from ..text import Tokenizer
from .keys import to_file_keys
from .state_dict import CheckpointError, model_from_state_dict

FORMAT = "clipforge"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def is_native_folder(folder: str | os.PathLike) -> bool:
    config = Path(folder) / CONFIG_FILE
    return config.is_file() and json.loads(config.read_text()).get("format") == FORMAT


def save_model(model: CLIP, folder: str | os.PathLike) -> Path:
    """Save weights (the files' layout) and config; a model with its own vocabulary (config
    text.tokenizer "bundled") also writes its tokenizer's vocab.json and merges.txt, so the folder
    is complete on its own."""
    config = CLIPConfig.from_dict(model.config.to_dict())
    tokenizer = model.tokenizer if config.text.tokenizer == "bundled" else None  # raises before anything is written
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = to_file_keys({key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()})
    write_atomically(folder / WEIGHTS_FILE, lambda path: save_file(state, str(path), metadata={"format": "pt"}))
    if tokenizer is not None:
        tokenizer.save(folder)
    document = json.dumps({"format": FORMAT, "model": config.to_dict()}, indent=2) + "\n"
    write_atomically(folder / CONFIG_FILE, lambda path: path.write_text(document))
    return folder


def load_native_folder(folder: str | os.PathLike) -> CLIP:
    folder = Path(folder)
    document = json.loads((folder / CONFIG_FILE).read_text())
    if document.get("format") != FORMAT:
        raise CheckpointError(f"{folder / CONFIG_FILE} is not a clipforge model config")
    if not (folder / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"{folder} has a config but no {WEIGHTS_FILE}")
    config = CLIPConfig.from_dict(document["model"])
    tokenizer = None
    if config.text.tokenizer == "bundled":
        if not (folder / "vocab.json").is_file() or not (folder / "merges.txt").is_file():
            raise CheckpointError(f"{folder} is a model with its own vocabulary but lacks vocab.json or merges.txt")
        tokenizer = Tokenizer.from_files(folder)
    return model_from_state_dict(config, load_file(str(folder / WEIGHTS_FILE)), tokenizer)
