"""The image index on disk, a folder that needs no server:

    index.sqlite             meta (format, model id and source, dim, roots, counters) and one row per
                             indexed file: path, size, mtime_ns, sha256 of its bytes, row of its embedding
    embeddings-<gen>.npy     float32 [rows, dim], L2-normalized; a row no file points at is a hole
    ann-<gen>-<version>.faiss  FAISS IVF index over all rows, written only when there are no holes
    parts/                   per-rank part indexes of a distributed build, until they are merged

Crash safety: a batch's vectors are written after the committed rows and fsynced before the SQLite
transaction that points its files at them commits, so a killed build leaves the last commit intact and
the rows after it unreferenced, to be overwritten by the next writer. Holes (changed and deleted files)
are removed by writing a new generation of the embeddings and switching to it in one transaction.
SQLite runs in WAL mode: readers see a consistent snapshot while the one writer (holding `.lock`) works.
The `.npy` header's row count is rewritten after each commit for `np.load(..., mmap_mode="r")`; the
database's count is the truth.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import struct
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from clipforge.core.atomic import write_atomically
from clipforge.core.download import cache_dir
from clipforge.search.ann import AnnIndex

FORMAT = 1
DATABASE = "index.sqlite"
INDEX_ENV = "CLIPFORGE_INDEX"
HEADER_BYTES = 128  # a fixed-size .npy v1.0 header, so the row count can be rewritten in place
DTYPE = np.dtype("<f4")
COPY_ROWS = 65536  # rows per block when copying embeddings
SQL_VARIABLES = 10000  # parameters per statement, below SQLite's limit

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL,
    row INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS files_by_row ON files(row);
"""


class IndexModelMismatch(ValueError):
    """The index was built with another model: its vectors are not comparable with this model's."""


class IndexBusyError(FileExistsError):
    """Another process is writing the index."""


def default_index_path() -> Path:
    """`$CLIPFORGE_INDEX`, else `index` in the clipforge cache folder."""
    return Path(os.environ.get(INDEX_ENV) or cache_dir() / "index")


@dataclass(frozen=True)
class FileRecord:
    """An image file as indexed: absolute `path`, and what tells whether it changed since."""

    path: str
    size: int
    mtime_ns: int
    sha256: str


@dataclass(frozen=True)
class StoredFile:
    record: FileRecord
    row: int


def npy_header(rows: int, dim: int) -> bytes:
    """A `.npy` v1.0 header of exactly `HEADER_BYTES` for float32 `[rows, dim]`."""
    text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dim}), }}"
    body = text.ljust(HEADER_BYTES - 10 - 1) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body.encode("latin1")


def _connect(database: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(database, isolation_level=None, check_same_thread=False, timeout=60)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    return connection


@dataclass(frozen=True)
class Snapshot:
    """What one query reads, consistent with itself: valid inside `ImageIndex.reading()` only."""

    vectors: np.ndarray  # [rows, dim] float32 memmap
    live_rows: np.ndarray | None  # sorted rows that belong to a file; None when every row does
    ann: AnnIndex | None
    index: ImageIndex

    def candidate_rows(self, folder: str | os.PathLike | None = None) -> np.ndarray | None:
        """Rows of the files under `folder` (all files when None); None means every row."""
        if folder is None:
            return self.live_rows
        prefix = os.path.join(Path(folder).expanduser().resolve(), "")
        # every path that starts with "<folder>/" sorts between it and "<folder>0" ('0' follows '/')
        found = self.index._db.execute("SELECT row FROM files WHERE path >= ? AND path < ? ORDER BY row",
                                       (prefix, prefix[:-1] + "0")).fetchall()
        return np.array([row for (row,) in found], dtype=np.int64)

    def paths(self, rows: Sequence[int]) -> list[Path]:
        """The file of each row, in order."""
        wanted = [int(row) for row in rows]
        found: dict[int, str] = {}
        for start in range(0, len(wanted), SQL_VARIABLES):
            chunk = wanted[start:start + SQL_VARIABLES]
            found.update(self.index._db.execute(
                f"SELECT row, path FROM files WHERE row IN ({','.join('?' * len(chunk))})", chunk).fetchall())
        return [Path(found[row]) for row in wanted]


class ImageIndex:
    """An index opened for reading; `reading()` follows changes a concurrent build commits."""

    def __init__(self, folder: Path, connection: sqlite3.Connection) -> None:
        self.folder = folder
        self._db = connection
        self._lock = threading.RLock()
        self._vectors_key: tuple[int, int] | None = None
        self._vectors = np.zeros((0, 0), DTYPE)
        self._live_key: int | None = None
        self._live_rows: np.ndarray | None = None
        self._ann_key: str | None = None
        self._ann: AnnIndex | None = None
        self._read_meta()

    @classmethod
    def open(cls, index_path: str | os.PathLike) -> ImageIndex:
        folder = Path(index_path).expanduser()
        if not (folder / DATABASE).is_file():
            raise FileNotFoundError(f"no image index at {folder}: build one with `clipforge index build`")
        return cls(folder, _connect(folder / DATABASE))

    def _read_meta(self) -> None:
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if int(meta.get("format", FORMAT)) != FORMAT:
            raise ValueError(f"{self.folder} is an index of format {meta['format']}; this clipforge reads {FORMAT}")
        self.model_id: str = meta.get("model_id", "")
        self.model_source: str = meta.get("model_source", "")
        self.dim = int(meta.get("dim", 0))
        self.roots: list[Path] = [Path(root) for root in json.loads(meta.get("roots", "[]"))]
        self.generation = int(meta.get("generation", 0))
        self.rows = int(meta.get("rows", 0))
        self.version = int(meta.get("version", 0))
        self.ann_meta: dict = json.loads(meta.get("ann", "{}"))

    @property
    def embeddings_path(self) -> Path:
        return self.folder / f"embeddings-{self.generation}.npy"

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM files").fetchone()[0]

    def contains(self, path: str | os.PathLike) -> bool:
        """True only for an indexed file inside the roots (`..` is resolved away first)."""
        candidate = os.path.abspath(os.path.expanduser(path))
        if not any(Path(candidate).is_relative_to(root) for root in self.roots):
            return False
        with self._lock:
            return self._db.execute("SELECT 1 FROM files WHERE path = ?", (candidate,)).fetchone() is not None

    def stored_files(self) -> dict[str, StoredFile]:
        with self._lock:
            found = self._db.execute("SELECT path, size, mtime_ns, sha256, row FROM files").fetchall()
        return {path: StoredFile(FileRecord(path, size, mtime, sha256), row) for path, size, mtime, sha256, row in found}

    @contextmanager
    def reading(self) -> Iterator[Snapshot]:
        """The index as of now, unchanged by commits until the block ends."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._read_meta()
                yield Snapshot(self._current_vectors(), self._current_live_rows(), self._current_ann(), self)
            finally:
                self._db.execute("COMMIT")

    def _current_vectors(self) -> np.ndarray:
        key = (self.generation, self.rows)
        if key != self._vectors_key:
            self._vectors = (np.memmap(self.embeddings_path, DTYPE, "r", HEADER_BYTES, (self.rows, self.dim))
                             if self.rows else np.zeros((0, self.dim), DTYPE))
            self._vectors_key = key
        return self._vectors

    def _current_live_rows(self) -> np.ndarray | None:
        if self._live_key != self.version:
            rows = np.array([row for (row,) in self._db.execute("SELECT row FROM files ORDER BY row")], np.int64)
            self._live_rows = None if len(rows) == self.rows else rows
            self._live_key = self.version
        return self._live_rows

    def ann_is_current(self) -> bool:
        return self.ann_meta.get("generation") == self.generation and self.ann_meta.get("version") == self.version

    def _current_ann(self) -> AnnIndex | None:
        if not self.ann_is_current():
            return None
        if self._ann_key != self.ann_meta["file"]:
            self._ann = AnnIndex.load(self.folder / self.ann_meta["file"], self.ann_meta["nprobe"],
                                      self.ann_meta["recall"])
            self._ann_key = self.ann_meta["file"]
        return self._ann

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ImageIndex:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.folder)!r}, {len(self)} images, model {self.model_id})"


class IndexWriter(ImageIndex):
    """The one process allowed to change an index; creates it if needed, refuses another model's."""

    def __init__(self, folder: Path, connection: sqlite3.Connection, lock_file: int) -> None:
        super().__init__(folder, connection)
        self._lock_file = lock_file
        self._embeddings: BinaryIO | None = None

    @classmethod
    def open_for_writing(cls, index_path: str | os.PathLike, *, model_id: str, model_source: str, dim: int,
                         roots: Sequence[Path]) -> IndexWriter:
        folder = Path(index_path).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        lock_file = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_file)
            raise IndexBusyError(f"{folder} is being written by another process") from None
        connection = _connect(folder / DATABASE)
        connection.executescript(SCHEMA)
        existing = dict(connection.execute("SELECT key, value FROM meta").fetchall())
        if existing and existing.get("model_id") != model_id:
            connection.close()
            os.close(lock_file)
            raise IndexModelMismatch(f"{folder} was built with model {existing.get('model_source')!r} "
                                     f"(id {existing.get('model_id')}), not this one (id {model_id}); "
                                     "index into another folder or delete this one")
        settings = {"model_source": model_source, "roots": json.dumps([str(root) for root in roots])}
        if not existing:
            settings |= {"format": str(FORMAT), "model_id": model_id, "dim": str(dim), "generation": "0",
                         "rows": "0", "version": "0", "ann": "{}"}
        with _transaction(connection):
            connection.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", settings.items())
        writer = cls(folder, connection, lock_file)
        writer._remove_orphans()
        return writer

    def _remove_orphans(self) -> None:
        """Files of other generations and of interrupted writes."""
        keep = {self.embeddings_path.name, self.ann_meta.get("file")}
        for pattern in ("embeddings-*.npy", "ann-*.faiss", ".*.tmp"):
            for path in self.folder.glob(pattern):
                if path.name not in keep:
                    path.unlink(missing_ok=True)

    def _embeddings_file(self) -> BinaryIO:
        if self._embeddings is None:
            if not self.embeddings_path.exists():
                write_atomically(self.embeddings_path, lambda partial: partial.write_bytes(npy_header(0, self.dim)))
            self._embeddings = open(self.embeddings_path, "r+b")
        return self._embeddings

    def commit(self, added: Sequence[FileRecord] = (), vectors: np.ndarray | None = None,
               touched: Sequence[FileRecord] = (), removed: Sequence[str] = ()) -> None:
        """One transaction: `added` files (new, or replacing a path's entry) with their `vectors`
        `[len(added), dim]`, `touched` files whose stat changed but not their content, `removed` paths."""
        if len(added) != (0 if vectors is None else len(vectors)):
            raise ValueError(f"{len(added)} files but {0 if vectors is None else len(vectors)} vectors")
        if added:
            if vectors.shape[1] != self.dim:
                raise ValueError(f"vectors of dimension {vectors.shape[1]}, the index holds {self.dim}")
            handle = self._embeddings_file()
            handle.seek(HEADER_BYTES + self.rows * self.dim * DTYPE.itemsize)
            handle.write(np.ascontiguousarray(vectors, DTYPE).tobytes())
            handle.flush()
            os.fsync(handle.fileno())
        rows = range(self.rows, self.rows + len(added))
        with _transaction(self._db):
            self._db.executemany(
                "INSERT INTO files VALUES (?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET size = excluded.size, "
                "mtime_ns = excluded.mtime_ns, sha256 = excluded.sha256, row = excluded.row",
                [(f.path, f.size, f.mtime_ns, f.sha256, row) for f, row in zip(added, rows)])
            self._db.executemany("UPDATE files SET size = ?, mtime_ns = ?, sha256 = ? WHERE path = ?",
                                 [(f.size, f.mtime_ns, f.sha256, f.path) for f in touched])
            self._db.executemany("DELETE FROM files WHERE path = ?", [(path,) for path in removed])
            self._set_meta(rows=self.rows + len(added), version=self.version + 1)
        if added:
            handle.seek(0)
            handle.write(npy_header(self.rows, self.dim))
            handle.flush()

    def _set_meta(self, **values: object) -> None:
        """Inside a transaction: store `values` and mirror them on self."""
        self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                             [(key, json.dumps(value) if isinstance(value, dict) else str(value))
                              for key, value in values.items()])
        for key, value in values.items():
            setattr(self, "ann_meta" if key == "ann" else key, value)

    def compact(self) -> bool:
        """Rewrite the embeddings without holes, in row order, as the next generation; False if there were none."""
        with self.reading() as snapshot:
            live = snapshot.live_rows
            vectors = snapshot.vectors
        if live is None:
            return False
        target = self.folder / f"embeddings-{self.generation + 1}.npy"

        def copy_live_rows(partial: Path) -> None:
            with open(partial, "wb") as handle:
                handle.write(npy_header(len(live), self.dim))
                for start in range(0, len(live), COPY_ROWS):
                    handle.write(np.ascontiguousarray(vectors[live[start:start + COPY_ROWS]]).tobytes())
                handle.flush()
                os.fsync(handle.fileno())

        write_atomically(target, copy_live_rows)
        old = self.embeddings_path
        with _transaction(self._db):
            # ascending old rows get ascending new ones, never a row another file still holds
            self._db.executemany("UPDATE files SET row = ? WHERE row = ?",
                                 [(new, int(old_row)) for new, old_row in enumerate(live)])
            self._set_meta(generation=self.generation + 1, rows=len(live), version=self.version + 1)
        if self._embeddings is not None:
            self._embeddings.close()
            self._embeddings = None
        old.unlink(missing_ok=True)
        return True

    def save_ann(self, ann: AnnIndex) -> None:
        """Store `ann`, built over the current rows, as the index's approximate search."""
        name = f"ann-{self.generation}-{self.version}.faiss"
        write_atomically(self.folder / name, ann.save)
        previous = self.ann_meta.get("file")
        with _transaction(self._db):
            self._set_meta(ann={"file": name, "generation": self.generation, "version": self.version,
                                "nprobe": ann.nprobe, "recall": ann.recall})
        if previous and previous != name:
            (self.folder / previous).unlink(missing_ok=True)

    def drop_ann(self) -> None:
        previous = self.ann_meta.get("file")
        with _transaction(self._db):
            self._set_meta(ann={})
        if previous:
            (self.folder / previous).unlink(missing_ok=True)

    def close(self) -> None:
        if self._embeddings is not None:
            self._embeddings.close()
        super().close()
        os.close(self._lock_file)


@contextmanager
def _transaction(connection: sqlite3.Connection) -> Iterator[None]:
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
