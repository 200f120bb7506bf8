"""Queries: the nearest indexed images to query vectors (exact, or with the index's FAISS IVF when it
has one and scans fewer vectors), and `Searcher`, which embeds a text or an image with the index's
own model and asks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from clipforge.checkpoints.onnx_runtime import OnnxCLIP, load_for_inference
from clipforge.images import ImageTransform
from clipforge.models import CLIP
from clipforge.search.ann import AnnIndex
from clipforge.search.exact import exact_top_k
from clipforge.models.inference import for_inference, inference_precision
from clipforge.search.fingerprint import model_fingerprint, precision_of, same_weights
from clipforge.search.store import ImageIndex, IndexModelMismatch, Snapshot


class SearchHit(NamedTuple):
    path: Path
    score: float  # cosine similarity of the query and the image embedding


def search_vectors(index: ImageIndex, queries: np.ndarray, k: int = 20,
                   folder: str | os.PathLike | None = None) -> list[list[SearchHit]]:
    """For each query `[m, dim]` (L2-normalized), the `k` most similar images (under `folder` only,
    when given), best first."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    queries = np.asarray(queries, np.float32)
    if queries.ndim != 2 or queries.shape[1] != index.dim:
        raise ValueError(f"queries must be [m, {index.dim}], got {list(queries.shape)}")
    with index.reading() as snapshot:
        rows = snapshot.candidate_rows(folder)
        ann = approximate_index(snapshot, rows)
        if ann is not None:
            scores, found = ann.search(queries, k, rows)
        else:
            scores, found = exact_top_k(snapshot.vectors, queries, k, rows)
        wanted = sorted({int(row) for row in found.ravel() if row >= 0})
        paths = dict(zip(wanted, snapshot.paths(wanted)))
    return [[SearchHit(paths[int(row)], float(score)) for score, row in zip(query_scores, query_rows) if row >= 0]
            for query_scores, query_rows in zip(scores, found)]


def approximate_index(snapshot: Snapshot, rows: np.ndarray | None) -> AnnIndex | None:
    """The snapshot's FAISS index, unless there is none or exact search of the candidate `rows` is
    cheaper: the IVF scans about nprobe / nlist of all vectors, so one calibrated to probe every
    list (data without cluster structure) is never used."""
    ann = snapshot.ann
    scanned = len(snapshot.vectors) * ann.nprobe / ann.index.nlist if ann is not None else 0
    if ann is None or ann.nprobe >= ann.index.nlist or (rows is not None and len(rows) <= scanned):
        return None
    return ann


ONNX_MISMATCH = (" (an ONNX export has the id of the weights it was exported from while its files are as "
                 "exported; re-export it, or build the index with it)")


class Searcher:
    """Text and image queries against an index, embedded by the model the index was built with."""

    def __init__(self, index: ImageIndex, model: CLIP | OnnxCLIP, preprocess: ImageTransform,
                 precision: str | None = None) -> None:
        """Queries run at `precision` (`clipforge.models.inference`); by default a float32 model is run at
        the precision the index was built at, and a model `for_inference` converted as it is."""
        if isinstance(model, CLIP) and (precision is not None or inference_precision(model) == "fp32"):
            model = for_inference(model, precision or precision_of(index.model_id))
        model_id = model_fingerprint(model)
        if not same_weights(model_id, index.model_id):
            raise IndexModelMismatch(f"the index at {index.folder} was built with {index.model_source!r} "
                                     f"(id {index.model_id}); this model's id is {model_id}"
                                     + ONNX_MISMATCH * isinstance(model, OnnxCLIP))
        self.index, self.model, self.preprocess = index, model, preprocess
        self.device = model.logit_scale.device

    @classmethod
    def for_index(cls, index: ImageIndex, device: str | torch.device = "cpu", runtime: str = "torch",
                  model: str | os.PathLike | None = None, precision: str | None = None) -> Searcher:
        """A searcher with `model` (default: the one the index records, `index.model_source`) under
        `runtime` ("torch", or "onnx" for a folder `clipforge export --onnx` wrote)."""
        model, preprocess = load_for_inference(model if model is not None else index.model_source, runtime, device)
        return cls(index, model, preprocess, precision)

    @torch.inference_mode()
    def by_text(self, text: str, k: int = 20, folder: str | os.PathLike | None = None) -> list[SearchHit]:
        tokens = self.model.tokenize([text], truncate=True)
        return self._nearest(self.model.encode_text(tokens.to(self.device), normalize=True), k, folder)

    @torch.inference_mode()
    def by_image(self, image: Image.Image, k: int = 20, folder: str | os.PathLike | None = None) -> list[SearchHit]:
        pixels = self.preprocess(image).unsqueeze(0).to(self.device)
        return self._nearest(self.model.encode_image(pixels, normalize=True), k, folder)

    def _nearest(self, query: torch.Tensor, k: int, folder: str | os.PathLike | None) -> list[SearchHit]:
        return search_vectors(self.index, query.float().cpu().numpy(), k, folder)[0]
