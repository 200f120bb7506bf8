"""What every built-in set declares: where its package comes from, how to list its samples from the
package's files, and how to draw one picture. Listing and drawing never touch the network, so a set
can be converted (and tested) from any folder laid out like its package."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from PIL import Image

from .obtain import Package


@dataclass(frozen=True)
class Item:
    """One sample to write: `picture` is whatever the set's `draw` needs (a path, a glyph, raw pixels);
    `meta` becomes key.json and must hold `captions` (the first is key.txt)."""

    key: str
    picture: Any
    meta: dict[str, Any]


@dataclass
class Listing:
    """A set's samples, the ones it could not list (reason → count), and the emoji concepts kept out of
    training (training sets) or marked unseen (OpenMoji)."""

    items: list[Item]
    skipped: Counter = field(default_factory=Counter)
    held_out: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Source:
    """A built-in set. `draw` must be a module-level function (it runs in worker processes) and may raise
    on a broken picture: that sample is skipped and counted."""

    name: str
    package: Package
    licence: str
    split: str
    list_items: Callable[[Path], Listing]
    draw: Callable[[Any], Image.Image]
    kind: str  # what the pictures are, as captions name them: "emoji", "icon" or "photo"
