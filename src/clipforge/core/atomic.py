"""Atomic file writes: write beside the target, then rename, so readers and crashes only ever see
the old file or the complete new one; and outputs that a failed command removes again."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def write_atomically(target: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call `write(temporary_path)`, then rename it onto `target`; the temporary file is removed
    if `write` raises."""
    target = Path(target)
    partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        write(partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def write_folder_atomically(destination: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call `write(staging_folder)` on a hidden folder beside `destination`, then rename it into place;
    `destination` must be absent or empty, and is left as it was if `write` raises."""
    destination = Path(destination).absolute()
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = destination.with_name(f".{destination.name}.partial-{os.getpid()}")
    try:
        write(staging)
        if destination.exists():
            destination.rmdir()  # only an empty folder can be replaced
        staging.rename(destination)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return destination


@contextmanager
def removed_on_failure(path: Path, resumable: Callable[[Path], bool] | None = None) -> Iterator[None]:
    """Run a command that writes `path`: should it fail, remove `path` if it did not exist before, and
    then the folders above it that it created, while they are empty; unless `resumable(path)` says a
    rerun continues from what it holds. Under torchrun, rank 0 alone removes."""
    path = path.absolute()
    created = [folder for folder in (path, *path.parents) if not folder.exists()]
    try:
        yield
    except BaseException:
        if created and os.environ.get("RANK", "0") == "0" and not _resumable(path, resumable):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
            for folder in created[1:]:
                if folder.exists():
                    if any(folder.iterdir()):
                        break
                    folder.rmdir()
        raise


def _resumable(path: Path, resumable: Callable[[Path], bool] | None) -> bool:
    if resumable is None or not path.exists():
        return False
    try:
        return resumable(path)
    except Exception:  # noqa: BLE001 - what cannot be inspected is kept
        return True
