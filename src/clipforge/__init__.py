"""clipforge: a complete, fast, hackable CLIP.

The names below, and the subpackages, are imported on first use: `import clipforge` and
`clipforge --help` do not pay for torch until something needs it."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .checkpoints import export_huggingface, get_tokenizer, list_pretrained, load, load_model, save_model
    from .images import ImageTransform
    from .models import CLIP, CLIPConfig, create_model, list_models, similarity
    from .text import Tokenizer, tokenize

__version__ = "0.1.0"
_EXPORTED_FROM = {
    "checkpoints": ("export_huggingface", "get_tokenizer", "list_pretrained", "load", "load_model", "save_model"),
    "images": ("ImageTransform",),
    "models": ("CLIP", "CLIPConfig", "create_model", "list_models", "similarity"),
    "text": ("Tokenizer", "tokenize"),
}
_SOURCE = {name: package for package, names in _EXPORTED_FROM.items() for name in names}
_SUBPACKAGES = ("app", "applications", "checkpoints", "core", "data", "evaluation", "images", "models", "search", "text",
                "training")
__all__ = sorted(_SOURCE)


def __getattr__(name: str) -> Any:
    if name in _SOURCE:
        value = getattr(importlib.import_module(f"{__name__}.{_SOURCE[name]}"), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_SUBPACKAGES))
