"""The one key map between the model's modules and the state-dict layout on disk.

OpenAI's and OpenCLIP's files put the text tower at the top level (`token_embedding.weight`,
`transformer.resblocks.0...`) beside `visual.*` and `logit_scale`; the model holds it as `text`.
Native folders keep the files' layout for both text towers, so every CLIP file reads the same way.
"""

from __future__ import annotations

import torch

TEXT_PREFIX = "text."
TOP_LEVEL = ("logit_scale", "logit_bias")
IMAGE_PREFIX = "visual."


def to_file_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Module keys (`text.token_embedding.weight`) -> the files' keys (`token_embedding.weight`)."""
    return {key.removeprefix(TEXT_PREFIX): value for key, value in state.items()}


def from_file_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The files' keys -> module keys: everything but the image tower and the temperature is text."""
    return {key if key.startswith(IMAGE_PREFIX) or key in TOP_LEVEL else TEXT_PREFIX + key: value
            for key, value in state.items()}
