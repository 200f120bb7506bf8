"""Run a model that `export_onnx` wrote, under ONNX Runtime, behind CLIP's encode API: `OnnxCLIP`
has `encode_image`, `encode_text`, `tokenize`, `logit_scale_exp`, `image_size`, `context_length`
and `config`, so code written for `CLIP` runs it unchanged (all but the dense features of maps).
Needs the `onnx` extra. `load_for_inference` opens a model under either runtime, as the commands'
`--model` and `--runtime` name it."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..core.download import sha256_of
from ..core.errors import ClipforgeError
from ..core.extras import require
from ..images import ImageTransform
from ..models import CLIP
from ..models.config import CLIPConfig
from ..text import NgramTokenizer, Tokenizer
from .onnx_export import FORMAT, FORMAT_VERSION, METADATA

RUNTIMES = ("torch", "onnx")


class OnnxModelError(ClipforgeError, ValueError):
    """A folder that is not a complete ONNX export."""


def is_onnx_folder(folder: str | os.PathLike) -> bool:
    return (Path(folder) / METADATA).is_file()


def read_onnx_metadata(folder: str | os.PathLike) -> dict[str, Any]:
    """`clipforge_onnx.json` of an export folder, checked for the files and version it names."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder: give the folder `clipforge export MODEL --onnx OUT` wrote")
    if not (folder / METADATA).is_file():
        raise OnnxModelError(f"{folder} holds no {METADATA}: it was not written by `clipforge export --onnx`")
    metadata = json.loads((folder / METADATA).read_text(encoding="utf-8"))
    if metadata.get("format") != FORMAT or metadata.get("version", 0) > FORMAT_VERSION:
        raise OnnxModelError(f"{folder / METADATA} is not a {FORMAT} file of version {FORMAT_VERSION} or earlier")
    for key in ("image_encoder", "text_encoder"):
        if not (folder / metadata[key]).is_file():
            raise OnnxModelError(f"{folder} lacks {metadata[key]}, which {METADATA} names")
    return metadata


def tokenizer_from_metadata(folder: Path, info: dict[str, Any]) -> Tokenizer | NgramTokenizer:
    """The tokenizer `clipforge_onnx.json` names: the n-gram hasher, or BPE from the files beside it."""
    if info["kind"] == "ngram":
        return NgramTokenizer(info["buckets"], info.get("word_bigrams", True), info.get("char_trigrams", True))
    if info["kind"] == "bpe":
        vocab, merges = folder / info["vocab"], folder / info["merges"]
        if not vocab.is_file() or not merges.is_file():
            raise OnnxModelError(f"{folder} lacks {info['vocab']} or {info['merges']}, the BPE tokenizer's files")
        return Tokenizer.from_files(vocab, merges)
    raise OnnxModelError(f"unknown tokenizer kind {info['kind']!r} in {folder / METADATA}")


class OnnxCLIP:
    """An exported CLIP under ONNX Runtime. Inputs may be torch tensors or numpy arrays; features come
    back as float32 torch tensors on the CPU, as `CLIP`'s do. `threads` caps ONNX Runtime's
    intra-op threads (default: its own choice, one per core)."""

    def __init__(self, folder: str | os.PathLike, threads: int | None = None,
                 providers: Sequence[str] = ("CPUExecutionProvider",)) -> None:
        ort = require("onnxruntime", "onnx", "running an ONNX model")
        self.folder = Path(folder)
        self.metadata = read_onnx_metadata(self.folder)
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
        self.image_session = ort.InferenceSession(str(self.folder / self.metadata["image_encoder"]), options,
                                                  providers=list(providers))
        self.text_session = ort.InferenceSession(str(self.folder / self.metadata["text_encoder"]), options,
                                                 providers=list(providers))
        self.tokenizer = tokenizer_from_metadata(self.folder, self.metadata["tokenizer"])
        self.preprocess = preprocess_from_metadata(self.metadata)
        self._transformer_text = self.metadata["tokenizer"]["kind"] == "bpe"
        # CLIP's parameter, as a CPU tensor: callers read the model's device from it
        self.logit_scale = torch.tensor(math.log(self.metadata["logit_scale"]))

    @property
    def image_size(self) -> int:
        return self.metadata["preprocess"]["image_size"]

    @property
    def context_length(self) -> int:
        return self.metadata["tokenizer"]["context_length"]

    @property
    def embed_dim(self) -> int:
        return self.metadata["embed_dim"]

    @functools.cached_property
    def config(self) -> CLIPConfig:
        """The exported model's configuration, as `CLIP.config` holds it."""
        return CLIPConfig.from_dict(self.metadata["config"])

    def weights_fingerprint(self, max_values: int | None = None) -> str:
        """A SHA-256 hex that stands for the weights where `models.fingerprint.weights_fingerprint`
        stands for a PyTorch model's: the source model's own, as the export recorded it over the same
        `max_values`, while every file the export wrote still holds the bytes it wrote (the graphs give
        its features within 1e-4, so an index built under one runtime is searched under the other).
        Otherwise (an export that recorded none, or whose files changed since, such as a graph
        quantized in place) a hash of what the runtime reads, which no PyTorch model shares."""
        recorded = self.metadata.get("weights") or {}
        if (recorded.get("fingerprint") and recorded.get("sampled_values") == max_values
                and self._files_as_exported):
            return recorded["fingerprint"]
        return self._content_fingerprint

    @functools.cached_property
    def _files_as_exported(self) -> bool:
        """Whether every file the export hashed still hashes the same, the files this runtime reads among them."""
        files = (self.metadata.get("weights") or {}).get("files") or {}
        tokenizer = self.metadata["tokenizer"]
        read = {self.metadata["image_encoder"], self.metadata["text_encoder"]}
        read |= {tokenizer["vocab"], tokenizer["merges"]} if tokenizer["kind"] == "bpe" else set()
        return read <= set(files) and all(
            (self.folder / name).is_file() and sha256_of(self.folder / name) == digest for name, digest in files.items())

    @functools.cached_property
    def _content_fingerprint(self) -> str:
        """SHA-256 hex of every file of the export folder but the JSON, with its preprocessing and tokenizer."""
        content = {"files": {path.name: sha256_of(path) for path in sorted(self.folder.iterdir())
                             if path.is_file() and path.name != METADATA},
                   "preprocess": self.metadata["preprocess"], "tokenizer": self.metadata["tokenizer"]}
        return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()

    def tokenize(self, texts: str | Sequence[str], truncate: bool = False) -> torch.Tensor:
        """Token ids [len(texts), context_length] int64, as the exported model's `tokenize` gave them."""
        return self.tokenizer(texts, context_length=self.context_length, truncate=truncate)

    def logit_scale_exp(self) -> torch.Tensor:
        """exp(logit_scale) as exported (already clamped at 100)."""
        return torch.tensor(float(self.metadata["logit_scale"]))

    def encode_image(self, image: torch.Tensor | np.ndarray, normalize: bool = False) -> torch.Tensor:
        """image: preprocessed [batch, 3, size, size] -> features [batch, embed_dim]."""
        pixels = _numpy(image, np.float32)
        if pixels.ndim != 4 or pixels.shape[1:] != (3, self.image_size, self.image_size):
            raise ValueError(f"expected images [batch, 3, {self.image_size}, {self.image_size}], got {pixels.shape}")
        return self._run(self.image_session, pixels, normalize)

    def encode_text(self, text: torch.Tensor | np.ndarray, normalize: bool = False) -> torch.Tensor:
        """text: token ids [batch, length <= context_length] -> features [batch, embed_dim]."""
        tokens = _numpy(text, np.int64)
        if tokens.ndim != 2 or tokens.shape[1] > self.context_length:
            raise ValueError(f"expected token ids [batch, length <= {self.context_length}], got {tokens.shape}")
        if self._transformer_text and len(tokens):
            # the causal mask keeps what follows the last end token out of every row's features
            tokens = tokens[:, : int(tokens.argmax(axis=1).max()) + 1]
        return self._run(self.text_session, tokens, normalize)

    def _run(self, session: Any, inputs: np.ndarray, normalize: bool) -> torch.Tensor:
        if not len(inputs):
            return torch.zeros(0, self.embed_dim)
        features = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: inputs})[0])
        return F.normalize(features, dim=-1) if normalize else features

    def eval(self) -> OnnxCLIP:
        """For code that calls `model.eval()`: an ONNX graph is always in inference mode."""
        return self

    def __repr__(self) -> str:
        return f"OnnxCLIP({str(self.folder)!r}, image_size={self.image_size}, context_length={self.context_length})"


def preprocess_from_metadata(metadata: dict[str, Any]) -> ImageTransform:
    info = metadata["preprocess"]
    return ImageTransform(info["image_size"], info["mean"], info["std"], interpolation=info["interpolation"],
                          resize_mode=info.get("resize_mode", "shortest"))


def load_onnx(folder: str | os.PathLike, threads: int | None = None) -> tuple[OnnxCLIP, ImageTransform]:
    """(model, preprocess) of an exported folder, as `clipforge.load` gives them for a PyTorch model."""
    model = OnnxCLIP(folder, threads)
    return model, model.preprocess


def check_runtime(runtime: str, device: str | torch.device | None = None) -> None:
    """ValueError for a runtime other than `RUNTIMES`, or for ONNX Runtime on a device other than the CPU."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; expected one of {', '.join(RUNTIMES)}")
    if runtime == "onnx" and device is not None and torch.device(device).type != "cpu":
        raise ValueError(f"--runtime onnx runs on the CPU under ONNX Runtime; drop --device {device}")


def load_for_inference(source: str | os.PathLike, runtime: str = "torch",
                       device: str | torch.device | None = "cpu") -> tuple[CLIP | OnnxCLIP, ImageTransform]:
    """(model, preprocess) to embed with, as a command's `--model` and `--runtime` name them: under
    "torch", `clipforge.load(source, device)` (a published name, weights file or model folder; `device`
    None is the CPU); under "onnx", the folder `clipforge export --onnx` wrote, on the CPU."""
    check_runtime(runtime, device)
    if runtime == "onnx":
        return load_onnx(source)
    if is_onnx_folder(source):
        raise OnnxModelError(f"{source} is an ONNX export (it holds {METADATA}): run it with --runtime onnx")
    from .loading import load

    return load(source, device if device is not None else "cpu")


def _numpy(values: torch.Tensor | np.ndarray, dtype: type) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.ascontiguousarray(values, dtype=dtype)
