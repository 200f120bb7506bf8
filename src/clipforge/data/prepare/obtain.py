"""Fetching a source package with its registry's own client (npm, or apt-get + dpkg-deb), as a user
would, into a downloads folder; no root install is needed.

Each package lands in a folder named for its exact version and is moved into place only when complete,
so an interrupted fetch is redone and a finished one is never fetched again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ...core.download import OFFLINE_ENV
from ...core.errors import ClipforgeError

CLIENTS = {"npm": ("npm",), "apt": ("apt-get", "dpkg-deb")}
INSTALL_HINTS = {
    "npm": "install Node.js with npm (e.g. `apt-get install npm`, or from https://nodejs.org)",
    "apt-get": "apt-get comes with Debian and Ubuntu; on other systems fetch the .deb by hand",
    "dpkg-deb": "install dpkg (Debian's `dpkg` package)",
}


class ObtainError(ClipforgeError, RuntimeError):
    """A package could not be fetched; the message says what to install or run."""


@dataclass(frozen=True)
class Package:
    """A pinned package: `client` is one of `CLIENTS` ("npm" or "apt")."""

    client: str
    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}@{self.version}" if self.client == "npm" else f"{self.name}={self.version}"


def obtain(package: Package, downloads: Path) -> Path:
    """Return the folder holding `package`'s files, fetching it the first time.

    For npm that is the package's own folder (the one with package.json); for apt it is the root of the
    extracted .deb (files under `usr/share/...`).
    """
    folder = downloads / package.client / f"{package.name.replace('/', '+')}-{package.version}"
    root = folder / "node_modules" / package.name if package.client == "npm" else folder
    if folder.is_dir():
        return root
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        raise ObtainError(f"{package} is not in {downloads} and {OFFLINE_ENV} is set")
    for program in CLIENTS[package.client]:
        if shutil.which(program) is None:
            raise ObtainError(f"`{program}` is needed to fetch {package} but is not on PATH: {INSTALL_HINTS[program]}")
    partial = folder.with_name(f".{folder.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        if package.client == "npm":
            _run(["npm", "install", "--prefix", str(partial), "--no-save", "--ignore-scripts", "--no-audit",
                  "--no-fund", str(package)], package)
        else:
            _apt_download(package, partial)
        try:
            os.replace(partial, folder)
        except OSError:
            if not folder.is_dir():
                raise  # else another process finished the same fetch first: use its copy
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return root


def _apt_download(package: Package, into: Path) -> None:
    """`apt-get download` the pinned .deb and unpack it with `dpkg-deb -x` (no install, no root)."""
    _run(["apt-get", "download", str(package)], package, cwd=into,
         hint=f"if apt-get cannot locate it, the package lists are missing or stale: run `apt-get update` as "
              f"root and retry; `apt-cache policy {package.name}` shows whether this pinned version is still offered")
    debs = list(into.glob("*.deb"))
    if len(debs) != 1:
        raise ObtainError(f"apt-get download {package} left {len(debs)} .deb files in {into}, expected one")
    _run(["dpkg-deb", "-x", str(debs[0]), str(into)], package)
    debs[0].unlink()


def _run(command: list[str], package: Package, cwd: Path | None = None, hint: str = "") -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip()[-2000:]
        raise ObtainError(f"`{' '.join(command)}` failed with status {result.returncode}: {output}"
                          + (f"\n{hint}" if hint else ""))
