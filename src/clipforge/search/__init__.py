"""Image search: index folders of images with a CLIP model, then query by text or by example image.

    report = build_index(["~/Pictures"], "pictures.index", "ViT-B-32")   # also updates and resumes
    index = ImageIndex.open("pictures.index")
    searcher = Searcher.for_index(index)               # or Searcher(index, model, preprocess)
    searcher.by_text("a red bicycle", k=10)            # [SearchHit(path, score), ...], best first

The index is a folder: SQLite for the files and the model's id, the L2-normalized float32 embeddings
as a `.npy`, and above a size threshold a FAISS IVF index; see `store` for its layout and crash safety.
FAISS comes with the search extra: `pip install 'clipforge[search]'`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from clipforge.search.builder import DEFAULT_ANN_THRESHOLD, IndexReport, SkippedFile, build_index, update_index
    from clipforge.search.dedup import DuplicateGroup, find_duplicates
    from clipforge.search.fingerprint import model_fingerprint
    from clipforge.search.query import Searcher, SearchHit, search_vectors
    from clipforge.search.store import IndexBusyError, IndexModelMismatch, ImageIndex, default_index_path

# Imported on first use, so that `clipforge.search.commands` adds its subcommands to `clipforge --help`
# without loading torch or FAISS.
_EXPORTED_FROM = {
    "builder": ("DEFAULT_ANN_THRESHOLD", "IndexReport", "SkippedFile", "build_index", "update_index"),
    "dedup": ("DuplicateGroup", "find_duplicates"),
    "fingerprint": ("model_fingerprint",),
    "query": ("SearchHit", "Searcher", "search_vectors"),
    "store": ("ImageIndex", "IndexBusyError", "IndexModelMismatch", "default_index_path"),
}
_SOURCE = {name: module for module, names in _EXPORTED_FROM.items() for name in names}
__all__ = sorted(_SOURCE)


def __getattr__(name: str) -> Any:
    if name not in _SOURCE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_SOURCE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
