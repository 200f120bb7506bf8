"""Exact nearest neighbours by inner product, a block of rows at a time, so a memory-mapped
`[rows, dim]` array of any size is scanned in bounded memory."""

from __future__ import annotations

import numpy as np

BLOCK_ROWS = 32768  # 64 MiB of 512-d float32 vectors per block


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int, rows: np.ndarray | None = None,
                block_rows: int = BLOCK_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """`(scores, rows)`, both `[queries, min(k, candidates)]`, best first: the `k` rows of `vectors`
    `[n, dim]` (or of its `rows` only) with the largest inner product with each of `queries` `[m, dim]`."""
    queries = np.ascontiguousarray(queries, np.float32)
    candidates = len(vectors) if rows is None else len(rows)
    best_scores = np.empty((len(queries), 0), np.float32)
    best_rows = np.empty((len(queries), 0), np.int64)
    for start in range(0, candidates, block_rows):
        end = min(start + block_rows, candidates)
        ids = np.arange(start, end) if rows is None else np.asarray(rows[start:end], np.int64)
        block = vectors[start:end] if rows is None else vectors[ids]
        best_scores = np.concatenate([best_scores, queries @ np.asarray(block).T], axis=1)
        best_rows = np.concatenate([best_rows, np.broadcast_to(ids, (len(queries), len(ids)))], axis=1)
        if best_scores.shape[1] > k:
            keep = np.argpartition(-best_scores, k - 1, axis=1)[:, :k]
            best_scores = np.take_along_axis(best_scores, keep, axis=1)
            best_rows = np.take_along_axis(best_rows, keep, axis=1)
    order = np.argsort(-best_scores, axis=1, kind="stable")
    return np.take_along_axis(best_scores, order, axis=1), np.take_along_axis(best_rows, order, axis=1)
