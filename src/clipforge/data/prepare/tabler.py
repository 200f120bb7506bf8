"""Tabler training pairs: the outline SVGs of npm's `@tabler/icons`, with the names, tags and categories
of its `icons.json`, rendered on white with cairosvg."""

from __future__ import annotations

import json
from pathlib import Path

from .captions import captions_for, identifier_words
from .obtain import Package
from .pictures import render_svg
from .source import Item, Listing, Source


def list_items(root: Path) -> Listing:
    listing = Listing([])
    for icon in json.loads((root / "icons.json").read_text(encoding="utf-8")).values():
        if "outline" not in icon.get("styles", {"outline": {}}):
            continue
        key, name = f"tabler-{icon['name']}", identifier_words(icon["name"])
        tags = [identifier_words(str(tag)) for tag in icon.get("tags", [])]
        meta = {"set": "tabler", "name": name, "concept": icon["name"], "category": icon.get("category") or None,
                "tags": tags, "captions": captions_for(key, name, "icon", tags=tags, category=icon.get("category"))}
        listing.items.append(Item(key, root / "icons" / "outline" / f"{icon['name']}.svg", meta))
    return listing


SOURCE = Source("tabler", Package("npm", "@tabler/icons", "3.52.0"), "MIT", "train", list_items, render_svg, "icon")
