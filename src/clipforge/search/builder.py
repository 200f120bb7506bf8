"""Building, updating and resuming an index: one function, `build_index`, makes the index hold
exactly the images under its roots, embedding only what is new or changed since it last ran.

A build commits every batch, so a killed build resumes where it stopped: the files committed are
unchanged on the rerun and only the rest are embedded. Under `torchrun` (WORLD_SIZE > 1 in the
environment) rank 0 lists the files and decides what needs embedding, every rank embeds its share
(by a hash of the path, so a rerun gives each rank the same files) into a part index under
`<index>/parts/`, and rank 0 merges the parts into the index. A part left by a killed run resumes the
same way, and a later build in one process merges any part it finds.
"""

from __future__ import annotations

import os
import shutil
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from clipforge.checkpoints.onnx_runtime import OnnxCLIP, check_runtime, load_for_inference
from clipforge.images import ImageTransform
from clipforge.models import CLIP
from clipforge.search.ann import build_ann
from clipforge.search.files import ImageFile, ImageFileDataset, collate_loaded, list_images, resolve_roots
from clipforge.models.inference import for_inference
from clipforge.search.fingerprint import model_fingerprint, precision_of
from clipforge.search.store import COPY_ROWS, DATABASE, FileRecord, ImageIndex, IndexWriter, StoredFile
from clipforge.core.distributed import init_distributed

DEFAULT_BATCH_SIZE = 64
DEFAULT_WORKERS = 2
DEFAULT_ANN_THRESHOLD = 50_000  # indexed images from which a FAISS index is built and used
PARTS = "parts"


@dataclass(frozen=True)
class SkippedFile:
    path: Path
    reason: str  # a `clipforge.data.SkipReason`


@dataclass
class IndexReport:
    """What a build did; `indexed` is the index's size afterwards, `approximate` whether it has a FAISS index."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    skipped_files: list[SkippedFile] = field(default_factory=list)
    indexed: int = 0
    approximate: bool = False

    @property
    def skipped(self) -> int:
        return len(self.skipped_files)

    def summary(self) -> str:
        """One line of counts, then one line per skipped file."""
        search = "FAISS IVF and exact search" if self.approximate else "exact search"
        lines = [f"{self.indexed} images indexed ({search}): {self.added} added, {self.updated} updated, "
                 f"{self.removed} removed, {self.unchanged} unchanged, {self.skipped} skipped"]
        lines += [f"  skipped ({file.reason}): {file.path}" for file in self.skipped_files]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self) | {"skipped": self.skipped}
        values["skipped_files"] = [{"path": str(file.path), "reason": file.reason} for file in self.skipped_files]
        return values


class Embedder:
    """Reads files through DataLoader workers and embeds them with the model, a batch at a time."""

    def __init__(self, model: CLIP | OnnxCLIP, preprocess: ImageTransform, batch_size: int, workers: int,
                 progress: bool) -> None:
        if batch_size < 1 or workers < 0:
            raise ValueError(f"batch_size must be at least 1 and workers at least 0, got {batch_size}, {workers}")
        self.model, self.preprocess = model, preprocess
        self.batch_size, self.workers, self.progress = batch_size, workers, progress
        self.device = model.logit_scale.device

    @torch.inference_mode()
    def vectors(self, pixels: torch.Tensor) -> np.ndarray:
        """`[n, dim]` float32, L2-normalized, for `pixels` `[n, 3, S, S]`."""
        return self.model.encode_image(pixels.to(self.device), normalize=True).float().cpu().numpy()


def build_index(
    roots: Sequence[str | os.PathLike],
    index_path: str | os.PathLike,
    model: str | os.PathLike,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int = DEFAULT_WORKERS,
    progress: bool = True,
    ann_threshold: int = DEFAULT_ANN_THRESHOLD,
    device: str | None = None,
    runtime: str = "torch",
    precision: str | None = None,
) -> IndexReport:
    """Make the index at `index_path` hold every image under `roots` (jpg, png, webp, gif, bmp, tiff;
    recursive), embedded with `model` (a published name or a path, loaded by `clipforge.load`; under
    `runtime` "onnx", a folder `clipforge export --onnx` wrote, run on the CPU by ONNX Runtime).

    Creates the index, or updates it: only new and changed files are embedded, deleted ones dropped;
    an interrupted build resumes. Unreadable files are skipped and listed in the report. Raises
    `IndexModelMismatch` if the index was built with another model, `IndexBusyError` if another process
    is writing it. From `ann_threshold` images on, a FAISS index is built for queries. `precision`
    ("auto", "fp32", "bf16", "int8"; `clipforge.models.inference`) is recorded in the index's model id;
    by default an existing index keeps its own and a new one is fp32.
    """
    check_runtime(runtime, device)
    joined_group = not dist.is_initialized()
    context = init_distributed("cpu" if runtime == "onnx" else device)
    try:
        clip, preprocess = load_for_inference(model, runtime, context.device)
        clip = for_inference(clip, precision or index_precision(index_path) or "fp32", towers=("visual",))
        settings = {"model_id": model_fingerprint(clip), "model_source": model_source(model),
                    "dim": clip.config.embed_dim, "roots": resolve_roots(roots)}
        embedder = Embedder(clip, preprocess, batch_size, workers, progress and context.is_main)
        if not context.enabled:
            with IndexWriter.open_for_writing(index_path, **settings) as writer:
                merge_parts(writer)
                report = sync(writer, list_images(writer.roots), embedder)
                finish(writer, report, ann_threshold)
            return report
        return _build_distributed(context.rank, context.world_size, index_path, settings, embedder, ann_threshold)
    finally:
        if joined_group and dist.is_initialized():  # leave a group the caller made to the caller
            dist.destroy_process_group()


def update_index(index_path: str | os.PathLike, model: str | os.PathLike | None = None, **options: Any) -> IndexReport:
    """`build_index` over the index's own roots, with its own model unless `model` is given."""
    with ImageIndex.open(index_path) as index:
        roots, source = index.roots, index.model_source
    return build_index(roots, index_path, model or source, **options)


def index_precision(index_path: str | os.PathLike) -> str | None:
    """The precision the index at `index_path` was built at; None where there is no index yet."""
    if not (Path(index_path).expanduser() / DATABASE).is_file():
        return None
    with ImageIndex.open(index_path) as index:
        return precision_of(index.model_id) if index.model_id else None


def model_source(model: str | os.PathLike) -> str:
    """What to store so another process can load the same model: an absolute path, or the name."""
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else str(model)


def changed_files(files: Sequence[ImageFile], stored: dict[str, StoredFile]) -> list[ImageFile]:
    """The files that are new or whose size or mtime differ from what the index stored."""
    def unchanged(file: ImageFile) -> bool:
        known = stored.get(file.path)
        return known is not None and (known.record.size, known.record.mtime_ns) == (file.size, file.mtime_ns)
    return [file for file in files if not unchanged(file)]


def sync(writer: IndexWriter, files: Sequence[ImageFile], embedder: Embedder) -> IndexReport:
    """Drop the stored files not in `files`, then embed the new and changed ones, committing each batch.
    A changed file whose bytes hash as before only has its size and mtime updated; one that has become
    unreadable is skipped and dropped."""
    stored = writer.stored_files()
    listed = {file.path for file in files}
    deleted = [path for path in stored if path not in listed]
    if deleted:
        writer.commit(removed=deleted)
    todo = changed_files(files, stored)
    report = IndexReport(removed=len(deleted), unchanged=len(files) - len(todo))
    dataset = ImageFileDataset(todo, embedder.preprocess,
                               {file.path: stored[file.path].record.sha256 for file in todo if file.path in stored})
    loader = DataLoader(dataset, embedder.batch_size, num_workers=embedder.workers, collate_fn=collate_loaded)
    with tqdm(total=len(todo), unit="img", desc="indexing", disable=not embedder.progress) as bar:
        for batch in loader:
            added, touched, broken = [], [], []
            for image in batch.images:
                file = todo[image.position]
                record = FileRecord(file.path, file.size, file.mtime_ns, image.sha256)
                if image.problem is not None:
                    report.skipped_files.append(SkippedFile(Path(file.path), image.problem))
                    broken += [file.path] if file.path in stored else []
                elif image.embed:
                    added.append(record)
                    report.updated += file.path in stored
                    report.added += file.path not in stored
                else:
                    touched.append(record)
                    report.unchanged += 1
            vectors = embedder.vectors(batch.pixels) if batch.pixels is not None else None
            writer.commit(added, vectors, touched, broken)
            bar.update(len(batch.images))
    return report


def finish(writer: IndexWriter, report: IndexReport, ann_threshold: int) -> None:
    """Remove holes, then build (or drop) the FAISS index as the index's size now asks."""
    writer.compact()
    report.indexed = len(writer)
    if report.indexed >= max(1, ann_threshold):
        if not writer.ann_is_current():
            with writer.reading() as snapshot:
                ann = build_ann(snapshot.vectors)
            writer.save_ann(ann)
    elif writer.ann_meta:
        writer.drop_ann()
    report.approximate = writer.ann_is_current()


def rank_of(path: str, world_size: int) -> int:
    """The rank that embeds `path`: the same on every rank and on every run."""
    return zlib.crc32(path.encode("utf-8", "surrogateescape")) % world_size


def merge_parts(writer: IndexWriter) -> tuple[int, int]:
    """Copy every part index under `<index>/parts/` into the index, then delete the parts;
    `(added, updated)` counted against the index before."""
    folder = writer.folder / PARTS
    if not folder.is_dir():
        return 0, 0
    before = writer.stored_files()
    added = updated = 0
    for part_folder in sorted(folder.iterdir()):
        if not (part_folder / DATABASE).is_file():
            continue
        with ImageIndex.open(part_folder) as part, part.reading() as snapshot:
            if part.model_id != writer.model_id:
                continue
            files = sorted(part.stored_files().values(), key=lambda stored: stored.row)
            for start in range(0, len(files), COPY_ROWS):
                chunk = files[start:start + COPY_ROWS]
                writer.commit([stored.record for stored in chunk],
                              np.asarray(snapshot.vectors[[stored.row for stored in chunk]]))
            updated += sum(stored.record.path in before for stored in files)
            added += sum(stored.record.path not in before for stored in files)
    shutil.rmtree(folder)
    return added, updated


def _build_distributed(rank: int, world_size: int, index_path: str | os.PathLike, settings: dict[str, Any],
                       embedder: Embedder, ann_threshold: int) -> IndexReport:
    """Rank 0 decides what to embed, every rank embeds its share into a part, rank 0 merges the parts."""
    plan: list[Any] = [None]
    if rank == 0:
        try:
            writer = IndexWriter.open_for_writing(index_path, **settings)
            merge_parts(writer)
            files, stored = list_images(writer.roots), writer.stored_files()
            plan = [changed_files(files, stored)]
        except Exception as error:
            dist.broadcast_object_list([f"{type(error).__name__}: {error}"], src=0)
            raise
    dist.broadcast_object_list(plan, src=0)
    if isinstance(plan[0], str):
        raise RuntimeError(f"rank 0 failed: {plan[0]}")
    todo = plan[0]
    shard = [file for file in todo if rank_of(file.path, world_size) == rank]
    part_path = Path(index_path).expanduser() / PARTS / f"rank-{rank}"
    with IndexWriter.open_for_writing(part_path, **settings) as part:
        report = sync(part, shard, embedder)
    reports = [None] * world_size if rank == 0 else None
    dist.gather_object(report, reports, dst=0)
    if rank == 0:
        with writer:
            added, updated = merge_parts(writer)
            skipped = [file for part_report in reports for file in part_report.skipped_files]
            listed = {file.path for file in files}
            deleted = [path for path in stored if path not in listed]
            broken = [str(file.path) for file in skipped if str(file.path) in stored]
            if deleted or broken:
                writer.commit(removed=deleted + broken)
            report = IndexReport(added, updated, len(deleted), len(files) - len(todo), skipped)
            finish(writer, report, ann_threshold)
    dist.barrier()
    return report
