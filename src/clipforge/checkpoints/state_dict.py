"""Reading weight files into native (OpenAI-layout) state dicts, reading the architecture back from
their shapes, and loading them into a model with errors that name what does not fit."""

from __future__ import annotations

import codecs
import os
import re
import zipfile
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..core.errors import ClipforgeError
from ..models import CLIP, CLIPConfig, TextConfig, VisionConfig
from ..models.clip import AnyTokenizer
from ..models.config import DEFAULT_LOGIT_SCALE
from .keys import from_file_keys, to_file_keys

# Entries of OpenAI's TorchScript archives and old OpenCLIP files that are not weights.
NON_WEIGHT_KEYS = ("input_resolution", "context_length", "vocab_size")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(ClipforgeError, ValueError):
    """A checkpoint cannot be read or does not fit the architecture; the message says why."""


def is_torchscript_archive(path: str | os.PathLike) -> bool:
    """OpenAI's release files are TorchScript archives: zips holding compiled `code/`."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name or name.endswith("constants.pkl") for name in archive.namelist())


def read_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str]:
    """Tensors of a `.safetensors`, a TorchScript archive or a pickled `.pt`/`.bin`, with wrappers
    (`state_dict`, `module.`, `_orig_mod.`) removed, in the files' layout. Returns (state dict, "safetensors" |
    "torchscript" | "pickle"). Pickles load with `weights_only=True`: no code runs."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}")
    try:
        if path.suffix == ".safetensors":
            state, kind = load_file(str(path)), "safetensors"
        elif is_torchscript_archive(path):
            state, kind = torch.jit.load(str(path), map_location="cpu").state_dict(), "torchscript"
        else:
            state, kind = torch.load(path, map_location="cpu", weights_only=True), "pickle"
    except CheckpointError:
        raise
    except Exception as error:  # every reader has its own exception types for a damaged file
        raise CheckpointError(f"cannot read {path} as a checkpoint: {_what_it_is(path, error)}. clipforge reads "
                              f"{READABLE}") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return to_file_keys(strip_wrappers(state)), kind  # a saved `model.state_dict()` reads as a file does


READABLE = (".safetensors files, PyTorch state dicts saved with torch.save (.pt, .bin), OpenAI's TorchScript "
            "archives, and model folders (clipforge or Hugging Face)")
# What a file that is not a checkpoint often is, by its first bytes.
SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "it is a PNG image, not weights"),
              (b"\xff\xd8\xff", "it is a JPEG image, not weights"),
              (b"GIF8", "it is a GIF image, not weights"),
              (b"%PDF", "it is a PDF document, not weights"),
              (b"\x1f\x8b", "it is gzip-compressed: unpack it first"),
              (b"version https://git-lfs", "it is a Git LFS pointer, not the file: fetch it with `git lfs pull`"))
SAVE_WEIGHTS_ALONE = "save the weights alone with torch.save(model.state_dict(), path)"


def _what_it_is(path: Path, error: Exception) -> str:
    """Why a file did not read as weights, in words: what it is (an image, a text or web page, a
    damaged archive), or for a pickle holding more than tensors, which object it holds."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
        size = path.stat().st_size
    except OSError as reading:
        return f"it cannot be opened ({reading.strerror})"
    unsupported = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
    if unsupported:
        return (f"it holds an object of type {unsupported.group(1)} besides tensors, and clipforge runs no code "
                f"from a file: {SAVE_WEIGHTS_ALONE}")
    if not head:
        return "the file is empty"
    for signature, description in SIGNATURES:
        if head.startswith(signature):
            return description
    if head[5:9] == b"\0\0\0{":  # safetensors: the header's length (a little-endian u64), then its JSON
        if path.suffix == ".safetensors":
            return f"it is a damaged or incomplete safetensors file ({size} bytes): copy or download it again"
        return "it looks like a safetensors file: name it .safetensors"
    if head.startswith(b"PK"):
        if path.suffix == ".safetensors":
            return "it is a PyTorch checkpoint (a zip archive), not safetensors: name it .pt"
        if zipfile.is_zipfile(path):
            return "it is a zip archive that holds no PyTorch weights"
        return f"it is a damaged or incomplete zip archive ({size} bytes): copy or download it again"
    if head.startswith(b"\x80"):  # a pickle's protocol opcode
        if isinstance(error, EOFError):
            return f"it is a pickle cut short ({size} bytes): copy or download it again"
        return f"it is a pickle that torch.save did not write, or that holds more than tensors: {SAVE_WEIGHTS_ALONE}"
    if b"\0" not in head and _is_utf8(head):
        if head.lstrip().lower().startswith((b"<!doctype html", b"<html")):
            return "it is a web page, not weights (did a download return a page instead of the file?)"
        return "it is a text file, not weights"
    return f"it is in no format clipforge reads ({type(error).__name__})"


def _is_utf8(head: bytes) -> bool:
    """Whether the first bytes of a file read as UTF-8 (a character cut at the end allowed)."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return True


def strip_wrappers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop DDP / torch.compile prefixes and entries that are not weights."""
    cleaned = {}
    for key, value in state.items():
        while key.startswith(WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        if key in NON_WEIGHT_KEYS or key.endswith("attn_mask"):
            continue
        cleaned[key] = value
    return cleaned


def infer_config(state: dict[str, torch.Tensor], activation: str) -> CLIPConfig:
    """The architecture of a native state dict, read from its shapes as OpenAI's `build_model`
    does. Head counts are not stored in weights: one head per 64 channels, OpenAI's rule."""
    try:
        if "visual.proj" in state:
            width = state["visual.conv1.weight"].shape[0]
            patch = state["visual.conv1.weight"].shape[-1]
            grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
            vision = VisionConfig(image_size=patch * grid, width=width, patch_size=patch,
                                  layers=_count_blocks(state, "visual.transformer.resblocks."),
                                  mlp_ratio=state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width)
        else:
            stages = [len({k.split(".")[2] for k in state if k.startswith(f"visual.layer{i}.")}) for i in range(1, 5)]
            grid = round((state["visual.attnpool.positional_embedding"].shape[0] - 1) ** 0.5)
            vision = VisionConfig(image_size=grid * 32, width=state["visual.layer1.0.conv1.weight"].shape[0], layers=stages)
        text_width = state["ln_final.weight"].shape[0]
        text = TextConfig(context_length=state["positional_embedding"].shape[0],
                          vocab_size=state["token_embedding.weight"].shape[0], width=text_width,
                          layers=_count_blocks(state, "transformer.resblocks."),
                          mlp_ratio=state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / text_width)
        embed_dim = state["text_projection"].shape[1]
    except (KeyError, IndexError) as error:
        raise CheckpointError(f"not a CLIP state dict in the OpenAI/OpenCLIP layout: no {error}") from None
    logit_scale = float(state["logit_scale"]) if "logit_scale" in state else DEFAULT_LOGIT_SCALE
    logit_bias = float(state["logit_bias"]) if "logit_bias" in state else None
    return CLIPConfig(embed_dim=embed_dim, activation=activation, vision=vision, text=text,
                      init_logit_scale=logit_scale, init_logit_bias=logit_bias)


def _count_blocks(state: dict[str, torch.Tensor], prefix: str) -> int:
    return len({key[len(prefix):].split(".")[0] for key in state if key.startswith(prefix)})


def model_from_state_dict(config: CLIPConfig, state: dict[str, torch.Tensor],
                          tokenizer: AnyTokenizer | None = None) -> CLIP:
    """Build the model without a throwaway random init and load `state` (the files' layout)
    strictly, in float32. `tokenizer` is checked against the text tower; without one the model
    uses the tokenizer its config names.

    A mismatch raises CheckpointError naming the missing, unexpected and wrongly shaped keys.
    """
    with torch.device("meta"):
        model = CLIP(config)
    expected = to_file_keys(model.state_dict())
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    for key in expected:  # BatchNorm counters are absent from some OpenCLIP files; they are not weights
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros((), dtype=torch.long)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
                         for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong_shape:
        raise CheckpointError(
            "checkpoint does not match the architecture: "
            + "; ".join(f"{label}: {_shorten(keys)}" for label, keys in
                        (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong_shape)) if keys))
    model.load_state_dict(from_file_keys(state), strict=True, assign=True)
    if tokenizer is not None:
        try:
            model.tokenizer = tokenizer
        except ValueError as error:
            raise CheckpointError(f"the checkpoint's tokenizer does not fit its model: {error}") from None
    return model.eval()


def _shorten(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")
