"""Export a CLIP to ONNX: `image_encoder.onnx` (pixels [batch, 3, size, size] -> features [batch,
embed_dim]), `text_encoder.onnx` (ids [batch, length <= context_length] -> features [batch,
embed_dim]) and `clipforge_onnx.json`, which holds what a runtime needs besides the graphs: the
preprocessing, the tokenizer (BPE files written beside it, or the n-gram hasher's buckets), the
logit scale, and the weights' fingerprint with each file's SHA-256 (which a search index knows the
export by). Features are not normalized, as `encode_image` and `encode_text` return them.

The graphs come from torch's `torch.export`-based exporter (`dynamo=True`, which needs onnxscript):
it is torch's default and the TorchScript exporter is deprecated and announced for removal. Both
run offline; the packages come with the `onnx` extra."""

from __future__ import annotations

import copy
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.atomic import write_folder_atomically
from ..core.download import sha256_of
from ..core.extras import require
from ..images import ImageTransform
from ..models.clip import CLIP
from ..models.fingerprint import weights_fingerprint
from ..models.text_transformer import TextTransformer
from ..text import NgramTokenizer, Tokenizer

IMAGE_ENCODER = "image_encoder.onnx"
TEXT_ENCODER = "text_encoder.onnx"
METADATA = "clipforge_onnx.json"
FORMAT = "clipforge-onnx"
FORMAT_VERSION = 1
OPSET = 18  # torch 2.13's exporter defaults to 20; 18 runs on older ONNX Runtimes (1.14+) and suffices here
FINGERPRINT_VALUES = 65536  # values sampled per tensor by the search index's model id (search/fingerprint.py)
SINGLE_FILE_LIMIT = 1 << 30  # bytes of weights above which a graph keeps them in a .data file beside it (protobuf caps a file at 2 GiB)


class ImageEncoder(nn.Module):
    """The graph's image side: `CLIP.encode_image` without normalization."""

    def __init__(self, model: CLIP) -> None:
        super().__init__()
        self.visual = model.visual

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual(pixels)


class TextEncoder(nn.Module):
    """The graph's text side. A transformer tower reads the features at each row's end token (the
    highest id, found by argmax) in one pass over the whole batch: the length grouping of
    `TextTransformer.forward` needs the host and gives the same features. The n-gram bag tower
    takes its id rows as they are."""

    def __init__(self, model: CLIP) -> None:
        super().__init__()
        self.text = model.text

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if isinstance(self.text, TextTransformer):
            return self.text._features_at_end(tokens, tokens.argmax(dim=-1))
        return self.text(tokens)


def tokenizer_metadata(model: CLIP) -> dict[str, Any]:
    """The tokenizer as `clipforge_onnx.json` names it; BPE's files are written by `export_onnx`."""
    tokenizer = model.tokenizer
    if isinstance(tokenizer, NgramTokenizer):
        return {"kind": "ngram", "context_length": model.context_length, "buckets": tokenizer.vocab_size,
                "word_bigrams": tokenizer.word_bigrams, "char_trigrams": tokenizer.char_trigrams}
    return {"kind": "bpe", "context_length": model.context_length, "vocab": "vocab.json", "merges": "merges.txt"}


def onnx_metadata(model: CLIP, preprocess: ImageTransform) -> dict[str, Any]:
    """What `clipforge_onnx.json` holds: everything but the graphs that using the model needs."""
    bias = model.logit_bias
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "opset": OPSET,
        "image_encoder": IMAGE_ENCODER,
        "text_encoder": TEXT_ENCODER,
        "embed_dim": model.config.embed_dim,
        "preprocess": {"image_size": preprocess.image_size, "mean": list(preprocess.mean), "std": list(preprocess.std),
                       "interpolation": preprocess.interpolation, "resize_mode": preprocess.resize_mode},
        "tokenizer": tokenizer_metadata(model),
        "logit_scale": float(model.logit_scale_exp().detach()),
        "logit_bias": None if bias is None else float(bias.detach()),
        "config": model.config.to_dict(),
    }


def _export_graph(module: nn.Module, example: torch.Tensor, path: Path, input_name: str,
                  dynamic: dict[int, Any]) -> None:
    """One graph with its named dynamic axes; weights over `SINGLE_FILE_LIMIT` go to a .data file beside it."""
    weight_bytes = sum(parameter.numel() * parameter.element_size() for parameter in module.parameters())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.export's own deprecations, not the user's to fix
        torch.onnx.export(module.eval(), (example,), path, input_names=[input_name], output_names=["features"],
                          dynamic_shapes={input_name: dynamic}, opset_version=OPSET, dynamo=True,
                          external_data=weight_bytes > SINGLE_FILE_LIMIT, verbose=False)


def check_onnx_destination(out: str | os.PathLike) -> Path:
    """`out` as a Path; FileExistsError when it is a file or a folder that holds anything."""
    out = Path(out)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not an empty folder: export writes a new folder, "
                              "so name one that does not exist (or an empty one)")
    return out


def require_onnx_export() -> None:
    """MissingExtraError naming the onnx extra when the exporter's packages are not installed."""
    require("onnx", "onnx", "ONNX export")
    require("onnxscript", "onnx", "ONNX export")


def export_onnx(model: CLIP, preprocess: ImageTransform | None, out: str | os.PathLike) -> Path:
    """Write `out`/image_encoder.onnx, text_encoder.onnx and clipforge_onnx.json (plus vocab.json and
    merges.txt for a BPE tokenizer), with a dynamic batch (and text length); `preprocess` defaults to
    CLIP's at the model's image size. `out` must not exist or be empty; a failure leaves it as it was."""
    require_onnx_export()
    out = check_onnx_destination(out)
    preprocess = preprocess if preprocess is not None else ImageTransform(model.image_size)
    metadata = onnx_metadata(model, preprocess)
    parameter = next(model.parameters())
    if parameter.dtype != torch.float32 or parameter.device.type != "cpu":  # export a float32 CPU copy
        model = copy.deepcopy(model).float().cpu()
    # the exported weights' fingerprint, and below each file's hash: what `OnnxCLIP.weights_fingerprint` checks
    metadata["weights"] = {"fingerprint": weights_fingerprint(model, max_values=FINGERPRINT_VALUES),
                           "sampled_values": FINGERPRINT_VALUES}
    was_training = model.training
    model.eval()

    def write(folder: Path) -> None:
        folder.mkdir()
        pixels = torch.zeros(2, 3, model.image_size, model.image_size)
        tokens = model.tokenize(["a photo", "a diagram of a cat"])
        batch = torch.export.Dim("batch")
        length = torch.export.Dim("length", max=model.context_length)
        with torch.no_grad():
            _export_graph(ImageEncoder(model), pixels, folder / IMAGE_ENCODER, "pixels", {0: batch})
            _export_graph(TextEncoder(model), tokens, folder / TEXT_ENCODER, "tokens", {0: batch, 1: length})
        if isinstance(model.tokenizer, Tokenizer):
            model.tokenizer.save(folder)
        metadata["weights"]["files"] = {path.name: sha256_of(path) for path in sorted(folder.iterdir())}
        (folder / METADATA).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")

    try:
        return write_folder_atomically(out, write)
    finally:
        model.train(was_training)
