"""Twemoji training pairs: the 64 px PNGs and `emoji.json` (names, short names, categories) of npm's
`emoji-datasource-twitter`, without skin-tone variants or the "Component" swatches, and without
held-out concepts."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from .captions import captions_for, identifier_words
from .emoji_concepts import admit_for_training, code_points, concept_id
from .obtain import Package
from .source import Item, Listing, Source


def list_items(root: Path) -> Listing:
    listing = Listing([])
    for entry in json.loads((root / "emoji.json").read_text(encoding="utf-8")):
        if entry["category"] == "Component" or not (info := admit_for_training(entry["unified"], listing)):
            continue
        if not entry.get("has_img_twitter", True):
            listing.skipped["no picture in the package"] += 1
            continue
        concept = concept_id(entry["unified"])
        key = f"twemoji-{concept.lower()}"
        aliases = [*info.aliases, *map(identifier_words, entry["short_names"]), entry["name"] or ""]
        captions = captions_for(key, info.name, "emoji", aliases, [identifier_words(entry["subcategory"])],
                                entry["category"])
        meta = {"set": "twemoji", "name": info.name, "concept": concept, "sequence": code_points(info.text),
                "category": entry["category"], "subcategory": entry["subcategory"], "emoji_version": info.version,
                "captions": captions}
        listing.items.append(Item(key, root / "img" / "twitter" / "64" / entry["image"], meta))
    return listing


def draw(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGBA")


SOURCE = Source("twemoji", Package("npm", "emoji-datasource-twitter", "16.0.0"),
                "CC-BY-4.0 (graphics, Twitter/X); MIT (emoji-datasource code and data)", "train", list_items, draw, "emoji")
