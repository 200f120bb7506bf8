"""Near-duplicate groups: images joined by a chain of pairs at or above a cosine similarity threshold
(connected components), found by exact blockwise comparison, or by FAISS range search when the index
has a FAISS index."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np

from clipforge.search.query import approximate_index
from clipforge.search.store import ImageIndex, Snapshot

DEFAULT_THRESHOLD = 0.95
BLOCK_ROWS = 4096


class DuplicateGroup(NamedTuple):
    paths: list[Path]  # sorted
    similarity: float  # the lowest similarity among the pairs that joined the group


def find_duplicates(index: ImageIndex, threshold: float = DEFAULT_THRESHOLD,
                    folder: str | os.PathLike | None = None) -> list[DuplicateGroup]:
    """Groups of two or more images (under `folder`, when given), largest first."""
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
    with index.reading() as snapshot:
        pairs = list(similar_pairs(snapshot, snapshot.candidate_rows(folder), threshold))
        parent: dict[int, int] = {}

        def root(row: int) -> int:
            while parent[row] != row:
                parent[row] = row = parent[parent[row]]  # path halving
            return row

        for first, second, _ in pairs:
            parent.setdefault(first, first)
            parent.setdefault(second, second)
            parent[root(second)] = root(first)
        members: dict[int, list[int]] = {}
        for row in parent:
            members.setdefault(root(row), []).append(row)
        lowest: dict[int, float] = {}
        for first, _, score in pairs:
            lowest[root(first)] = min(score, lowest.get(root(first), score))
        paths = dict(zip(parent, snapshot.paths(list(parent))))
    groups = [DuplicateGroup(sorted(paths[row] for row in rows), lowest[group]) for group, rows in members.items()]
    return sorted(groups, key=lambda group: (-len(group.paths), group.paths[0]))


def similar_pairs(snapshot: Snapshot, rows: np.ndarray | None, threshold: float) -> Iterator[tuple[int, int, float]]:
    """`(row, other row, similarity)` for every pair of candidate rows at or above `threshold`, each once."""
    candidates = np.arange(len(snapshot.vectors)) if rows is None else rows
    ann = approximate_index(snapshot, rows)
    for start in range(0, len(candidates), BLOCK_ROWS):
        ids = candidates[start:start + BLOCK_ROWS]
        queries = np.asarray(snapshot.vectors[ids])
        if ann is not None:
            query, found, scores = ann.range_search(queries, np.nextafter(np.float32(threshold), -np.inf), rows)
            firsts, seconds = ids[query], found
        else:
            firsts, seconds, scores = _exact_pairs(snapshot.vectors, queries, ids, candidates[start:], threshold)
        for first, second, score in zip(firsts.tolist(), seconds.tolist(), scores.tolist()):
            if first < second:
                yield first, second, score


def _exact_pairs(vectors: np.ndarray, queries: np.ndarray, query_rows: np.ndarray, rows: np.ndarray,
                 threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    found = ([], [], [])
    for start in range(0, len(rows), BLOCK_ROWS):
        ids = rows[start:start + BLOCK_ROWS]
        scores = queries @ np.asarray(vectors[ids]).T
        query, other = np.nonzero(scores >= threshold)
        for collected, values in zip(found, (query_rows[query], ids[other], scores[query, other])):
            collected.append(values)
    return tuple(np.concatenate(values) for values in found)
