"""Prompt templates and class names as data: the project's template sets ship as JSON in
`templates/`; any other set or class list is read from a file the user names (JSON, or one entry a
line), so reference lists such as OpenAI's `imagenet_zeroshot.json` are used where they lie."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

TEMPLATE_SETS = resources.files(__package__) / "templates"
DEFAULT_TEMPLATE_SET = "general"


def template_set_names() -> list[str]:
    return sorted(entry.name.removesuffix(".json") for entry in TEMPLATE_SETS.iterdir() if entry.name.endswith(".json"))


def load_templates(name_or_path: str | os.PathLike) -> list[str]:
    """A project set by name (see `template_set_names`) or a file: a JSON list, a JSON object with a
    "templates" list, or text with one template a line. Every template holds exactly one `{}`."""
    name = str(name_or_path)
    if name in template_set_names():
        return check_templates(json.loads((TEMPLATE_SETS / f"{name}.json").read_text())["templates"], name)
    path = Path(name_or_path)
    if not path.is_file():
        raise FileNotFoundError(f"{name} is neither a template set ({', '.join(template_set_names())}) nor a file")
    return check_templates(_read_entries(path, "templates"), name)


def load_classnames(path: str | os.PathLike) -> list[str]:
    """Class names from a JSON list, a JSON object with a "classes" list, or text with one a line."""
    names = _read_entries(Path(path), "classes")
    return check_classnames(names, str(path))


def parse_labels(text: str) -> list[str]:
    """"cat, dog,car" -> ["cat", "dog", "car"]; a label typed twice is refused as a slip."""
    labels = check_classnames([label.strip() for label in text.split(",") if label.strip()], repr(text))
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(f"{text!r} names a label twice: {', '.join(repeated)}")
    return labels


def check_templates(templates: Sequence[str], origin: str) -> list[str]:
    if not templates:
        raise ValueError(f"{origin} holds no templates")
    for template in templates:
        if not isinstance(template, str) or template.count("{}") != 1:
            raise ValueError(f"template {template!r} in {origin} must contain exactly one '{{}}' for the class name")
        try:
            template.format("x")
        except (IndexError, KeyError, ValueError) as error:
            raise ValueError(f"template {template!r} in {origin} does not format: {error}") from None
    return list(templates)


def check_classnames(names: Sequence[str], origin: str) -> list[str]:
    """Names may repeat: ImageNet's list has two classes called "missile" and two "sunglasses"."""
    if not names:
        raise ValueError(f"{origin} holds no class names")
    if any(not isinstance(name, str) or not name.strip() for name in names):
        raise ValueError(f"{origin} holds an empty or non-text class name")
    return list(names)


def _read_entries(path: Path, key: str) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not a file")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() != ".json":
        return [line.strip() for line in text.splitlines() if line.strip()]
    document = json.loads(text)
    entries = document.get(key) if isinstance(document, dict) else document
    if not isinstance(entries, list):
        raise ValueError(f"{path} must hold a JSON list or an object with a {key!r} list")
    return entries
