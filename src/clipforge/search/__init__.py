"""Image search: index folders of images with a CLIP model, then query by text or by example image.

    report = build_index(["~/Pictures"], "pictures.index", "ViT-B-32")   # also updates and resumes
    index = ImageIndex.open("pictures.index")
    searcher = Searcher.for_index(index)               # or Searcher(index, model, preprocess, tokenizer)
    searcher.by_text("a red bicycle", k=10)            # [SearchHit(path, score), ...], best first

The index is a folder: SQLite for the files and the model's id, the L2-normalized float32 embeddings
as a `.npy`, and above a size threshold a FAISS IVF index; see `store` for its layout and crash safety.
"""

from clipforge.search.builder import DEFAULT_ANN_THRESHOLD, IndexReport, SkippedFile, build_index, update_index
from clipforge.search.dedup import DuplicateGroup, find_duplicates
from clipforge.search.fingerprint import model_fingerprint
from clipforge.search.query import Searcher, SearchHit, search_vectors
from clipforge.search.store import IndexBusyError, IndexModelMismatch, ImageIndex, default_index_path

__all__ = [
    "DEFAULT_ANN_THRESHOLD", "DuplicateGroup", "ImageIndex", "IndexBusyError", "IndexModelMismatch", "IndexReport",
    "SearchHit", "Searcher", "SkippedFile", "build_index", "default_index_path", "find_duplicates",
    "model_fingerprint", "search_vectors", "update_index",
]
