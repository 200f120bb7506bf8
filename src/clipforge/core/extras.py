"""Optional extras. `pip install clipforge` brings what loading, tokenizing, preprocessing, embedding
and training need; data preparation, search, the app and the evaluation report's plots and probe come
with extras (`clipforge[data]`, `[search]`, `[app]`, `[eval]`). Their packages are imported only when
the feature runs, through `require` or `extra_imports`, so a missing one fails with the `pip install`
that brings it rather than a bare ModuleNotFoundError."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from .errors import ClipforgeError


class MissingExtraError(ClipforgeError, ImportError):
    """A feature's optional package is not installed; the message names the extra that brings it."""

    def __init__(self, feature: str, extra: str, missing: str) -> None:
        super().__init__(f"{feature} needs the {extra} extra ({missing} is not installed): "
                         f"pip install 'clipforge[{extra}]'", name=missing)
        self.feature, self.extra, self.missing = feature, extra, missing

    def __reduce__(self) -> tuple:  # survives the trip back from a worker process
        return type(self), (self.feature, self.extra, self.missing)


@contextmanager
def extra_imports(extra: str, feature: str) -> Iterator[None]:
    """Imports in this block that find a package missing raise MissingExtraError naming `extra`."""
    try:
        yield
    except ModuleNotFoundError as error:
        package = (error.name or "").partition(".")[0]
        if package in ("", "clipforge"):  # a bug in clipforge, not a missing extra
            raise
        raise MissingExtraError(feature, extra, package) from error


def require(module: str, extra: str, feature: str) -> ModuleType:
    """`module`, imported; MissingExtraError if it, or a package it needs, is not installed."""
    with extra_imports(extra, feature):
        return importlib.import_module(module)
