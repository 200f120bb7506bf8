"""Fetching published files (weights, BPE merges) into a local cache, verified by SHA-256.

Downloads go to a temporary file beside the target and are renamed into place only after the
checksum matches, so an interrupted or corrupted download never leaves a file that looks good.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from .atomic import write_atomically
from .errors import ClipforgeError

CACHE_ENV = "CLIPFORGE_CACHE"
OFFLINE_ENV = "CLIPFORGE_OFFLINE"


class DownloadError(ClipforgeError, RuntimeError):
    """A file could not be fetched or did not verify; the message says how to get it by hand."""


def cache_dir() -> Path:
    """The cache folder: `$CLIPFORGE_CACHE`, else `$XDG_CACHE_HOME/clipforge`, else `~/.cache/clipforge`."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "clipforge"


def sha256_of(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(url: str, sha256: str | None, filename: str | None = None, *, progress: bool = True) -> Path:
    """Return the cached copy of `url`, downloading and verifying it first if needed.

    A cached file whose checksum does not match is downloaded again. With `CLIPFORGE_OFFLINE=1`
    or no network, the error names the URL and the exact path to place the file at.
    """
    target = cache_dir() / (filename or url.rstrip("/").rsplit("/", 1)[-1])
    if target.is_file() and (sha256 is None or sha256_of(target) == sha256):
        return target
    manual = f"download {url} by hand and save it as {target}"
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        raise DownloadError(f"{target.name} is not in the cache and {OFFLINE_ENV} is set: {manual}")
    target.parent.mkdir(parents=True, exist_ok=True)

    def download_verified(partial: Path) -> None:
        _download(url, partial, progress, label=target.name)
        if sha256 is not None and (actual := sha256_of(partial)) != sha256:
            raise DownloadError(f"{url} has SHA-256 {actual}, expected {sha256}: the file is corrupt or "
                                f"was replaced upstream; {manual} once it verifies")

    try:
        write_atomically(target, download_verified)
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        raise DownloadError(f"could not download {url} ({error}); {manual}") from error
    return target


def _download(url: str, destination: Path, progress: bool, label: str) -> None:
    with urllib.request.urlopen(url, timeout=60) as response, open(destination, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=label, disable=not progress) as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                bar.update(len(chunk))
