"""OpenMoji evaluation set (never trained on): the same emoji concepts as the training sets drawn by
another artist, from npm's `openmoji` colour SVGs and `data/openmoji.json`, without skin-tone variants,
components or OpenMoji's own extras. The class for 9-way zero-shot is the group ("people-body", ...);
`seen` says whether the concept is in the training emoji sets (see `emoji_concepts`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .captions import captions_for
from .emoji_concepts import concept_id, is_trained, lookup
from .obtain import Package
from .pictures import render_svg
from .source import Item, Listing, Source

GROUPS = ("smileys-emotion", "people-body", "animals-nature", "food-drink", "travel-places", "activities",
          "objects", "symbols", "flags")


def list_items(root: Path) -> Listing:
    listing = Listing([])
    for entry in read_entries(root):
        if entry["skintone"] != "" or entry["group"] not in GROUPS:
            continue
        concept = concept_id(entry["hexcode"])
        if not (seen := is_trained(entry["hexcode"])):
            listing.held_out.add(concept)
        name, aliases, tags = describe(entry)
        key = f"openmoji-{concept.lower()}"
        meta = {"set": "openmoji", "name": name, "concept": concept, "sequence": entry["hexcode"],
                "group": entry["group"], "subgroup": entry["subgroups"], "seen": seen,
                "author": entry["openmoji_author"], "captions": captions_for(key, name, "emoji", aliases, tags)}
        listing.items.append(Item(key, svg_path(root, entry), meta))
    return listing


def read_entries(root: Path) -> list[dict[str, Any]]:
    """`data/openmoji.json`: one entry per emoji, skin-tone variants and OpenMoji's extras included."""
    return json.loads((root / "data" / "openmoji.json").read_text(encoding="utf-8"))


def describe(entry: dict[str, Any]) -> tuple[str, list[str], list[str]]:
    """An entry's name (CLDR's, from the `emoji` package, else OpenMoji's annotation), aliases and tags."""
    info = lookup(entry["hexcode"])
    name = info.name if info else entry["annotation"]
    aliases = [*(info.aliases if info else ()), entry["annotation"]]
    tags = [tag for field in ("tags", "openmoji_tags") for tag in entry[field].split(",")]
    return name, aliases, tags


def svg_path(root: Path, entry: dict[str, Any]) -> Path:
    """The entry's colour SVG."""
    return root / "color" / "svg" / f"{entry['hexcode']}.svg"


SOURCE = Source("openmoji", Package("npm", "openmoji", "17.0.0"), "CC-BY-SA-4.0", "eval", list_items, render_svg, "emoji")
