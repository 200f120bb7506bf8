"""Material Design Icons training pairs: the SVGs of npm's `@mdi/svg` that are not deprecated, with
the names, aliases and tags of its `meta.json`, rendered on white with cairosvg. MDI's tags are
groups such as "Files / Folders": the first is the category, and each part is a caption tag."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .captions import captions_for, identifier_words
from .obtain import Package
from .pictures import render_svg
from .source import Item, Listing, Source


def list_items(root: Path) -> Listing:
    listing = Listing([])
    for icon in json.loads((root / "meta.json").read_text(encoding="utf-8")):
        if icon.get("deprecated"):
            continue
        key, name = f"mdi-{icon['name']}", identifier_words(icon["name"])
        aliases = [identifier_words(alias) for alias in icon.get("aliases", [])]
        tags = [part for tag in icon.get("tags", []) for part in re.split(r"\s*[/+]\s*", tag)]
        category = icon["tags"][0] if icon.get("tags") else None
        meta = {"set": "mdi", "name": name, "concept": icon["name"], "category": category, "aliases": aliases,
                "tags": icon.get("tags", []), "captions": captions_for(key, name, "icon", aliases, tags, category)}
        listing.items.append(Item(key, root / "svg" / f"{icon['name']}.svg", meta))
    return listing


SOURCE = Source("mdi", Package("npm", "@mdi/svg", "7.4.47"), "Apache-2.0", "train", list_items, render_svg, "icon")
