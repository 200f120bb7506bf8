"""Approximate nearest neighbours for large indexes: a FAISS inverted file (IVF-Flat, inner product)
whose number of probed lists is calibrated when it is built, to the smallest power of two that reaches
`RECALL_TARGET` Recall@10 against exact search on a sample of the indexed vectors used as queries.

IVF rather than HNSW: on 2 CPU cores HNSW (M=32) takes about 2 minutes to insert 50k 512-d vectors,
so about an hour for 1M, while IVF trains and adds 1M in about a minute. How many lists must be probed
depends on the data: embeddings of real images cluster and need few; uniformly random vectors in 512
dimensions, whose neighbours are all nearly equidistant, need almost all (see bench/README.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipforge.core.extras import extra_imports
from clipforge.search.exact import exact_top_k

with extra_imports("search", "image search"):
    import faiss

RECALL_TARGET = 0.95
CALIBRATION_QUERIES = 200
CALIBRATION_K = 10
TRAINING_POINTS_PER_LIST = 32
KMEANS_ITERATIONS = 10
ADD_ROWS = 65536


def list_count(rows: int) -> int:
    """Inverted lists for `rows` vectors: 2 * sqrt(rows), with at least 39 training points per list."""
    return max(1, min(round(2 * math.sqrt(rows)), rows // 39))


@dataclass
class AnnIndex:
    """A FAISS IVF index whose ids are the rows of the vectors it was built from."""

    index: faiss.IndexIVFFlat
    nprobe: int
    recall: float  # Recall@10 measured at `nprobe` when calibrated

    def search(self, queries: np.ndarray, k: int, rows: np.ndarray | None = None,
               nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """`(scores, rows)` `[queries, k]`, best first, searching only `rows` when given; a query with
        fewer than `k` results found has them padded with rows -1."""
        selector = None if rows is None else faiss.IDSelectorBatch(np.ascontiguousarray(rows, np.int64))
        parameters = faiss.SearchParametersIVF(nprobe=nprobe or self.nprobe, sel=selector)
        return self.index.search(np.ascontiguousarray(queries, np.float32), k, params=parameters)

    def range_search(self, queries: np.ndarray, threshold: float,
                     rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`(query, row, score)` triples, flattened, of every (selected) row scoring above `threshold`."""
        selector = None if rows is None else faiss.IDSelectorBatch(np.ascontiguousarray(rows, np.int64))
        parameters = faiss.SearchParametersIVF(nprobe=self.nprobe, sel=selector)
        limits, scores, found = self.index.range_search(np.ascontiguousarray(queries, np.float32), threshold,
                                                        params=parameters)
        return np.repeat(np.arange(len(queries)), np.diff(limits).astype(np.int64)), found, scores

    def save(self, path: Path) -> None:
        faiss.write_index(self.index, str(path))

    @classmethod
    def load(cls, path: Path, nprobe: int, recall: float) -> AnnIndex:
        return cls(faiss.read_index(str(path)), nprobe, recall)


def build_ann(vectors: np.ndarray, recall_target: float = RECALL_TARGET, seed: int = 0) -> AnnIndex:
    """An IVF index over `vectors` `[n, dim]` (normalized float32, memory-mapped or not), calibrated."""
    rows, dim = vectors.shape
    lists = list_count(rows)
    rng = np.random.default_rng(seed)
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = KMEANS_ITERATIONS
    index.cp.seed = seed
    index.cp.min_points_per_centroid = 1  # list_count already asks for 39 per list where there are that many
    training = np.sort(rng.choice(rows, min(rows, TRAINING_POINTS_PER_LIST * lists), replace=False))
    index.train(np.ascontiguousarray(vectors[training], np.float32))
    for start in range(0, rows, ADD_ROWS):
        index.add(np.ascontiguousarray(vectors[start:start + ADD_ROWS], np.float32))
    nprobe, recall = calibrate(AnnIndex(index, lists, 1.0), vectors, recall_target, rng)
    return AnnIndex(index, nprobe, recall)


def calibrate(ann: AnnIndex, vectors: np.ndarray, recall_target: float,
              rng: np.random.Generator) -> tuple[int, float]:
    """`(nprobe, recall)`: the first power of two (or all lists) whose Recall@10 reaches the target, each
    sampled vector's own row left out of both result lists."""
    lists = ann.index.nlist
    sample = np.sort(rng.choice(len(vectors), min(len(vectors), CALIBRATION_QUERIES), replace=False))
    queries = np.ascontiguousarray(vectors[sample], np.float32)
    _, truth = exact_top_k(vectors, queries, CALIBRATION_K + 1)
    nprobe = 1
    while True:
        nprobe = min(nprobe, lists)
        _, found = ann.search(queries, CALIBRATION_K + 1, nprobe=nprobe)
        recall = recall_at_k(truth, found, CALIBRATION_K, exclude=sample)
        if recall >= recall_target or nprobe == lists:
            return nprobe, recall
        nprobe *= 2


def recall_at_k(truth: np.ndarray, found: np.ndarray, k: int, exclude: np.ndarray | None = None) -> float:
    """Mean over queries of |found ∩ truth| / |truth|, each the first `k` rows of a query's list
    (`[queries, >= k]`, -1 for none) after dropping that query's `exclude` row."""
    total = 0.0
    for query, (true_rows, found_rows) in enumerate(zip(truth, found)):
        skip = -1 if exclude is None else exclude[query]
        true_set = set([row for row in true_rows if row != skip][:k])
        found_set = set([row for row in found_rows if row not in (skip, -1)][:k])
        total += len(found_set & true_set) / max(1, len(true_set))
    return total / max(1, len(truth))
