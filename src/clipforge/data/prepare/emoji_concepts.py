"""Emoji concepts shared by the three emoji sets: one identity for a concept whoever drew it, its names
(from the `emoji` package's CLDR data), and the held-out rule that keeps some concepts out of training.

- A concept id is the emoji's code points in upper-case hex joined by "-", without variation selectors
  (FE0E, FE0F) and without skin-tone modifiers (1F3FB–1F3FF): "👍🏽" and "👍" are both concept "1F44D".
- A concept is held out when the first 8 bytes of SHA-256(concept id), read big-endian, are
  < `HELD_OUT_PERCENT` % of 2^64 (about 10 %). Held-out concepts, with all their skin tones, never appear
  in the Twemoji or Noto training shards.
- The training sets hold the emoji of Unicode Emoji `TRAINED_EMOJI_VERSION` or earlier (the newest
  version the pinned Twemoji covers) whose concept is not held out; OpenMoji marks those concepts `seen`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from types import ModuleType

from ...core.extras import require
from .captions import clean
from .source import Listing

HELD_OUT_PERCENT = 10
TRAINED_EMOJI_VERSION = 16.0
VARIATION_SELECTORS = {"FE0E", "FE0F"}
SKIN_TONES = {"1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF"}


@dataclass(frozen=True)
class EmojiInfo:
    """One fully-qualified emoji as the `emoji` package knows it; `version` is its Unicode Emoji version."""

    text: str
    name: str
    aliases: tuple[str, ...]
    version: float


def code_points(text: str) -> str:
    """"👍🏽" → "1F44D-1F3FD"."""
    return "-".join(f"{ord(char):04X}" for char in text)


def concept_id(sequence: str) -> str:
    """The concept of a hex sequence such as "1f44d-1f3fd" or "0023-FE0F-20E3" (see module docstring)."""
    points = sequence.upper().split("-")
    return "-".join(point for point in points if point not in VARIATION_SELECTORS | SKIN_TONES)


def is_held_out(concept: str) -> bool:
    digest = hashlib.sha256(concept.encode("ascii")).digest()
    return int.from_bytes(digest[:8], "big") < HELD_OUT_PERCENT * 2**64 // 100


def is_trained(sequence: str) -> bool:
    """Whether the training emoji sets contain this emoji's concept."""
    info = lookup(sequence)
    return info is not None and info.version <= TRAINED_EMOJI_VERSION and not is_held_out(concept_id(sequence))


def admit_for_training(sequence: str, listing: Listing) -> EmojiInfo | None:
    """The emoji's info when a training set keeps it, else None. Emoji newer than `TRAINED_EMOJI_VERSION`
    are not part of the training sets; a held-out concept is added to `listing.held_out`, and an emoji the
    `emoji` package does not know is counted as skipped."""
    info = lookup(sequence)
    if info is None:
        listing.skipped["unknown to the emoji package"] += 1
    elif info.version <= TRAINED_EMOJI_VERSION:
        if not is_held_out(concept := concept_id(sequence)):
            return info
        listing.held_out.add(concept)
    return None


def lookup(sequence: str) -> EmojiInfo | None:
    """The fully-qualified emoji with this exact sequence, ignoring variation selectors."""
    return _by_sequence().get(_without_selectors(sequence))


def fully_qualified() -> list[EmojiInfo]:
    """Every fully-qualified emoji the `emoji` package lists, skin-tone variants included."""
    return list(_by_sequence().values())


def emoji_package() -> ModuleType:
    """The `emoji` package (the data extra), whose CLDR data names the emoji."""
    return require("emoji", "data", "data preparation")


@cache
def _by_sequence() -> dict[str, EmojiInfo]:
    emoji = emoji_package()
    index = {}
    for text, data in emoji.EMOJI_DATA.items():
        if data["status"] == emoji.STATUS["fully_qualified"]:
            aliases = tuple(clean(alias.strip(":")) for alias in data.get("alias", ()))
            index[_without_selectors(code_points(text))] = EmojiInfo(text, clean(data["en"].strip(":")), aliases,
                                                                      float(data["E"]))
    return index


def _without_selectors(sequence: str) -> str:
    return "-".join(point for point in sequence.upper().split("-") if point not in VARIATION_SELECTORS)
