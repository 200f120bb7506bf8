"""Every test runs offline, with a private cache, and finds the shared reference data (the OpenAI
BPE merges) through CLIPFORGE_BPE_PATH when `../shared/data` exists."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
OPENAI_MERGES = SHARED_DATA / "openai-clip" / "bpe_simple_vocab_16e6.txt.gz"


def require_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"reference data {path} is absent (it lives in ../shared/data beside the checkout)")
    return path


@pytest.fixture(autouse=True)
def offline_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("CLIPFORGE_CACHE", str(cache))
    monkeypatch.setenv("CLIPFORGE_OFFLINE", "1")
    if OPENAI_MERGES.exists():
        monkeypatch.setenv("CLIPFORGE_BPE_PATH", str(OPENAI_MERGES))
    else:
        monkeypatch.delenv("CLIPFORGE_BPE_PATH", raising=False)
    return cache


@pytest.fixture(autouse=True, scope="session")
def deterministic_threads() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)


def random_text_tokens(batch: int, context_length: int, vocab_size: int, lengths: list[int]) -> torch.Tensor:
    """Token ids laid out like the tokenizer's: sot, words, eot (the highest id), zero padding."""
    generator = torch.Generator().manual_seed(1)
    tokens = torch.zeros(batch, context_length, dtype=torch.long)
    for row, length in zip(range(batch), lengths):
        tokens[row, 0] = vocab_size - 2
        tokens[row, 1 : length - 1] = torch.randint(1, vocab_size - 2, (length - 2,), generator=generator)
        tokens[row, length - 1] = vocab_size - 1
    return tokens


@pytest.fixture(scope="session")
def colour_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a tiny model trained on solid colours ("a red square", ...); see colour_model.py."""
    from colour_model import train_colour_model

    return train_colour_model(tmp_path_factory.mktemp("colour-model"))
