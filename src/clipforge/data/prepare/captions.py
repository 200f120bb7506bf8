"""Captions for the built-in sets, made from a concept's name, aliases, tags and category, with varied
phrasing so the same picture is not always paired with the same sentence.

Rules (version `CAPTION_RULES_VERSION`; change the version whenever a rule changes, so prepared sets
are rebuilt):

1. Phrases are cleaned: lower case, `_` becomes a space, runs of spaces collapse. Icon identifiers
   (`arrow-up-bold`) are split into words first (`arrow up bold`). Aliases and tags that repeat the name
   or each other are dropped.
2. `kind` is the picture's kind: "emoji", "icon" or "photo", with its article ("an emoji", "a photo").
3. Templates, used only when their fields exist:
   "{name}" · "{a kind} of {name}" · "{name} {kind}" · "{a kind} showing {name}" ·
   "{name}, also called {alias}" · "{name}: {tags}" · "{a kind} of {name}, tagged {tags}" ·
   "{a kind} of {name} from the {category} group".
   `{alias}` is one alias drawn at random; each `{tags}` is its own draw of up to three tags in random
   order, joined by ", ".
4. The templates are shuffled and the first `count` distinct results are the sample's `captions`
   (stored in its .json); the first one is also its .txt caption. The shuffle is seeded by a SHA-256
   of the sample key, so a rerun gives the same captions while neighbouring samples get different
   phrasings.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence

CAPTION_RULES_VERSION = 1
TAGS_PER_CAPTION = 3


def clean(phrase: str) -> str:
    return re.sub(r"\s+", " ", phrase.replace("_", " ")).strip().lower()


def identifier_words(identifier: str) -> str:
    """`arrow-up-bold` → `arrow up bold`: icon names are hyphenated identifiers, not phrases."""
    return clean(identifier.replace("-", " "))


def stable_random(key: str) -> random.Random:
    """A generator seeded by the key's SHA-256 (not Python's salted `hash`), so reruns draw alike."""
    return random.Random(int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big"))


def captions_for(key: str, name: str, kind: str, aliases: Sequence[str] = (), tags: Sequence[str] = (),
                 category: str | None = None, count: int = 5) -> list[str]:
    """Up to `count` distinct captions for one sample, by the rules in this module's docstring."""
    rng = stable_random(key)
    name = clean(name)
    aliases = _distinct(aliases, exclude={name})
    tags = _distinct(tags, exclude={name, *aliases})
    a_kind = f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}"
    templates = [f"{name}", f"{a_kind} of {name}", f"{name} {kind}", f"{a_kind} showing {name}"]
    if aliases:
        templates.append(f"{name}, also called {rng.choice(aliases)}")
    if tags:
        some_tags = [", ".join(rng.sample(tags, min(TAGS_PER_CAPTION, len(tags)))) for _ in range(2)]
        templates += [f"{name}: {some_tags[0]}", f"{a_kind} of {name}, tagged {some_tags[1]}"]
    if category:
        templates.append(f"{a_kind} of {name} from the {clean(category)} group")
    rng.shuffle(templates)
    return list(dict.fromkeys(templates))[:count]


def _distinct(phrases: Sequence[str], exclude: set[str]) -> list[str]:
    cleaned = (clean(phrase) for phrase in phrases)
    return [phrase for phrase in dict.fromkeys(cleaned) if phrase and phrase not in exclude]
