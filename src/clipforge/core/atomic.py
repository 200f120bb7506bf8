"""Atomic file writes: write beside the target, then rename, so readers and crashes only ever see
the old file or the complete new one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


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
