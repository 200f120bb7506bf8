"""Training sets from Iconify's per-collection npm packages (`@iconify-json/<prefix>`): icon sets and
emoji sets by many artists, read by one reader because every package has the same layout.

`icons.json` holds each icon's SVG body and box, the aliases (other names for an icon; aliases that
rotate or flip it are other pictures and are not used as names), and `metadata.json` the categories
and style suffixes (Phosphor's `acorn-bold` is `acorn` in the style "bold"). Which collections are
used, pinned, with their licences, is data: `iconify_sets.json`.

- Icons are named from their identifier without the style suffix; the category is the collection's.
- Emoji are matched to a concept through the package's `chars.json` (code points → icon name) where it
  has one, else through the `emoji` package's CLDR names written as Iconify writes them
  ("A button (blood type)" → `a-button-blood-type`, also without hyphens as Firefox OS writes them);
  unmatched icons are counted as skipped. Held-out and too-new concepts are left out as in every
  training emoji set (see `emoji_concepts`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from .captions import captions_for, identifier_words
from .emoji_concepts import SKIN_TONES, admit_for_training, code_points, concept_id, fully_qualified
from .obtain import Package
from .pictures import render_svg
from .source import Item, Listing, Source

DEFAULT_BOX = 16  # Iconify's default icon width and height


@dataclass(frozen=True)
class Collection:
    """One `iconify_sets.json` entry; `styles` keeps only icons with these suffixes (None: all)."""

    prefix: str
    version: str
    kind: str
    licence: str
    styles: tuple[str, ...] | None = None


def collections() -> list[Collection]:
    table = json.loads((resources.files(__package__) / "iconify_sets.json").read_text(encoding="utf-8"))
    return [Collection(prefix, entry["version"], entry["kind"], entry["licence"],
                       tuple(entry["styles"]) if "styles" in entry else None) for prefix, entry in table.items()]


def svg_markup(icon: dict[str, Any], defaults: dict[str, Any]) -> str:
    """A standalone SVG for one icon: its body in its box, `currentColor` drawn black."""
    box = [icon.get(field, defaults.get(field, fallback))
           for field, fallback in (("left", 0), ("top", 0), ("width", DEFAULT_BOX), ("height", DEFAULT_BOX))]
    return ('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'viewBox="{" ".join(map(str, box))}" color="black">{icon["body"]}</svg>')


def split_style(name: str, suffixes: list[str]) -> tuple[str, str]:
    """`acorn-bold` → (`acorn`, `bold`); the longest matching suffix wins, `""` is the plain style."""
    for suffix in sorted((suffix for suffix in suffixes if suffix), key=len, reverse=True):
        if name.endswith(f"-{suffix}") and len(name) > len(suffix) + 1:
            return name[: -len(suffix) - 1], suffix
    return name, ""


def emoji_slug(name: str) -> str:
    """A CLDR name as Iconify writes it: "A button (blood type)" → `a-button-blood-type`."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower().replace("\N{RIGHT SINGLE QUOTATION MARK}", "").replace("'", "")).strip("-")


@cache
def _sequences_by_slug() -> dict[str, str]:
    index: dict[str, str] = {}
    for info in fully_qualified():
        slug = emoji_slug(info.name)
        for form in (slug, slug.replace("-", "")):
            index.setdefault(form, code_points(info.text))
    return index


def _read(root: Path, name: str) -> dict[str, Any]:
    path = root / name
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _icons(root: Path, collection: Collection, listing: Listing) -> Iterator[tuple[str, str, str, str, list[str]]]:
    """(icon name, base name, style, SVG markup, base names of its plain aliases) of each visible icon
    of a kept style."""
    data = _read(root, "icons.json")
    if not data.get("icons"):
        raise FileNotFoundError(f"{root / 'icons.json'} lists no icons: the package is not laid out as expected")
    suffixes = list(_read(root, "metadata.json").get("suffixes", {}))
    aliases: dict[str, list[str]] = {}
    for alias, target in data.get("aliases", {}).items():
        if set(target) == {"parent"}:
            aliases.setdefault(target["parent"], []).append(split_style(alias, suffixes)[0])
    for name, icon in data["icons"].items():
        if icon.get("hidden"):
            continue
        base, style = split_style(name, suffixes)
        if collection.styles is not None and style not in collection.styles:
            continue
        if "body" not in icon:
            listing.skipped["no SVG body"] += 1
            continue
        yield name, base, style, svg_markup(icon, data), aliases.get(name, [])


def _categories(root: Path) -> dict[str, str]:
    """Icon name → its first category in `metadata.json`, CamelCase split into words."""
    index: dict[str, str] = {}
    for category, names in _read(root, "metadata.json").get("categories", {}).items():
        for name in names:
            index.setdefault(name, re.sub(r"(?<=[a-z])(?=[A-Z])", " ", category))
    return index


def list_icons(root: Path, collection: Collection) -> Listing:
    listing = Listing([])
    categories = _categories(root)
    for name, base, style, markup, aliases in _icons(root, collection, listing):
        key, words = f"{collection.prefix}-{name}", identifier_words(base)
        alias_words = [identifier_words(alias) for alias in aliases]
        category = categories.get(name)
        meta = {"set": collection.prefix, "name": words, "concept": name, "style": style or None,
                "category": category, "aliases": alias_words,
                "captions": captions_for(key, words, "icon", alias_words, category=category)}
        listing.items.append(Item(key, markup, meta))
    return listing


def list_emoji(root: Path, collection: Collection) -> Listing:
    listing = Listing([])
    categories = _categories(root)
    by_name = {name: sequence for sequence, name in _read(root, "chars.json").items()}
    seen: set[str] = set()
    for name, _, _, markup, _ in _icons(root, collection, listing):
        sequence = by_name.get(name) or _sequences_by_slug().get(name) or _sequences_by_slug().get(name.replace("-", ""))
        if sequence is None:
            listing.skipped["not an emoji the emoji package names"] += 1
            continue
        sequence = "-".join(point for point in sequence.upper().split("-") if point != "FE0F")
        if sequence in seen or not (info := admit_for_training(sequence, listing)):
            continue
        seen.add(sequence)
        key, concept = f"{collection.prefix}-{sequence.lower()}", concept_id(sequence)
        category = categories.get(name)
        meta = {"set": collection.prefix, "name": info.name, "concept": concept, "sequence": code_points(info.text),
                "category": category, "skin_tone": any(point in SKIN_TONES for point in sequence.split("-")),
                "emoji_version": info.version,
                "captions": captions_for(key, info.name, "emoji", info.aliases, category=category)}
        listing.items.append(Item(key, markup, meta))
    return listing


def source(collection: Collection) -> Source:
    lister = list_emoji if collection.kind == "emoji" else list_icons

    def list_items(root: Path) -> Listing:
        return lister(root, collection)

    return Source(collection.prefix, Package("npm", f"@iconify-json/{collection.prefix}", collection.version),
                  collection.licence, "train", list_items, render_svg, collection.kind)


SOURCES = [source(collection) for collection in collections()]
