"""Training checkpoints: everything needed to continue exactly (weights, optimizer, step, data
position, RNG states, config), written atomically so a crash leaves the previous one intact."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.atomic import write_atomically

CHECKPOINT_GLOB = "step-*.pt"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(folder: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write `step-NNNNNNN.pt` (7-digit step), then drop all but the newest `keep` checkpoints."""
    folder.mkdir(parents=True, exist_ok=True)
    path = write_atomically(folder / f"step-{step:07d}.pt", lambda partial: torch.save(state, partial))
    for old in sorted(folder.glob(CHECKPOINT_GLOB))[:-keep]:
        old.unlink(missing_ok=True)
    return path


def latest_checkpoint(folder: Path) -> Path | None:
    checkpoints = sorted(folder.glob(CHECKPOINT_GLOB))
    return checkpoints[-1] if checkpoints else None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Our own files hold RNG states (numpy arrays, Python tuples), so they need the full unpickler:
    only resume from checkpoints you wrote."""
    return torch.load(path, map_location="cpu", weights_only=False)
