"""OpenMoji's people in roles, every variant of each (evaluation only: the bias probe's data). A role is
kept when OpenMoji draws its full family: the gender-neutral person, a man and a woman, each with no
skin tone (the yellow default) and the five skin tones, 3 × 6 = 18 pictures of one concept; roles with
fewer variants (ninja, prince, pregnant man/woman/person, whose genders are separate emoji) are counted
as skipped. Roles are OpenMoji's `person-role` subgroup (health worker, teacher, judge, police officer,
...): the other people subgroups are gestures, activities and sports, not roles.

Two Unicode patterns make a family, both read from the code points (`role_and_gender`):
person/man/woman + ZWJ + an object (🧑‍⚕️ 👨‍⚕️ 👩‍⚕️), or a person emoji, alone or + ZWJ + the male or
female sign (👮 👮‍♂️ 👮‍♀️). Each sample's metadata names its `role` (the gender-neutral emoji's name, the
class of the probe's zero-shot), `gender` (person, man, woman) and `skin_tone` (none, light, medium-light,
medium, medium-dark, dark), and whether the training emoji sets hold its concept (`seen`: gender variants
are separate concepts, so one can be held out while the others are seen)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from .captions import captions_for
from .emoji_concepts import concept_id, is_trained
from .openmoji import SOURCE as OPENMOJI
from .openmoji import describe, read_entries, svg_path
from .pictures import render_svg
from .source import Item, Listing, Source

SUBGROUPS = ("person-role",)
GENDERS = ("person", "man", "woman")
SKIN_TONES = ("none", "light", "medium-light", "medium", "medium-dark", "dark")  # openmoji.json's skintone 0 (""), 1-5
DEFAULT_VARIANT = ("person", "none")  # the variant every other one is compared with
ZWJ = "200D"
PERSON_PREFIXES = {"1F9D1": "person", "1F468": "man", "1F469": "woman"}
GENDER_SIGNS = {"2642": "man", "2640": "woman"}
INCOMPLETE = f"not a full family of {len(GENDERS)} genders × {len(SKIN_TONES)} skin tones"


def role_and_gender(sequence: str) -> tuple[str, str]:
    """The role (the gender-neutral emoji's concept id) and gender of a hex sequence, skin tone ignored:
    "1F469-1F3FD-200D-2695-FE0F" → ("1F9D1-200D-2695", "woman"); "1F46E-200D-2642-FE0F" → ("1F46E", "man")."""
    points = concept_id(sequence).split("-")
    if len(points) > 2 and points[0] in PERSON_PREFIXES and points[1] == ZWJ:
        return "-".join(["1F9D1", *points[1:]]), PERSON_PREFIXES[points[0]]
    if len(points) > 2 and points[-2] == ZWJ and points[-1] in GENDER_SIGNS:
        return "-".join(points[:-2]), GENDER_SIGNS[points[-1]]
    return "-".join(points), "person"


def list_items(root: Path) -> Listing:
    listing = Listing([])
    by_hexcode = {}
    families: dict[str, dict[tuple[str, str], dict[str, Any]]] = defaultdict(dict)
    for entry in read_entries(root):
        tone = entry["skintone"]
        if entry["subgroups"] not in SUBGROUPS or not (tone == "" or isinstance(tone, int)):
            continue  # other subgroups, and several people with a tone each
        by_hexcode[entry["hexcode"]] = entry
        role, gender = role_and_gender(entry["hexcode"])
        families[role][gender, SKIN_TONES[tone or 0]] = entry
    for role_id, family in families.items():
        if len(family) != len(GENDERS) * len(SKIN_TONES):
            listing.skipped[INCOMPLETE] += len(family)
            continue
        role = describe(family[DEFAULT_VARIANT])[0]
        for gender in GENDERS:
            for skin_tone in SKIN_TONES:
                entry = family[gender, skin_tone]
                listing.items.append(_item(root, entry, by_hexcode[entry["skintone_base_hexcode"]], role_id, role,
                                           gender, skin_tone, listing))
    return listing


def _item(root: Path, entry: dict[str, Any], base: dict[str, Any], role_id: str, role: str, gender: str,
          skin_tone: str, listing: Listing) -> Item:
    """One variant; its tags are its untoned base's (openmoji.json gives toned variants none)."""
    if not (seen := is_trained(entry["hexcode"])):
        listing.held_out.add(concept_id(entry["hexcode"]))
    name, aliases, _ = describe(entry)
    tags = describe(base)[2]
    key = "openmoji-variants-" + "-".join(p for p in entry["hexcode"].lower().split("-") if p != "fe0f")
    meta = {"set": "openmoji-variants", "name": name, "role": role, "gender": gender, "skin_tone": skin_tone,
            "role_concept": role_id, "concept": concept_id(entry["hexcode"]), "sequence": entry["hexcode"],
            "seen": seen, "author": entry["openmoji_author"],
            "captions": captions_for(key, name, "emoji", aliases, tags)}
    return Item(key, svg_path(root, entry), meta)


SOURCE = Source("openmoji-variants", OPENMOJI.package, OPENMOJI.licence, "eval", list_items, render_svg, "emoji")
