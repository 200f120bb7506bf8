"""Every test runs offline, with a private cache; reference data lives in `tests/data/`. A skipped
test marked `reference` (identity with OpenAI's ids or Hugging Face) fails the run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest_plugins = ["pytester"]  # for test_reference_guard.py

TEST_DATA = Path(__file__).parent / "data"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A reference test that skips proves nothing, so its skip becomes a failure."""
    report = (yield).get_result()
    if report.skipped and not hasattr(report, "wasxfail") and item.get_closest_marker("reference"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = f"a reference test must not be skipped (it was: {reason})"


@pytest.fixture(autouse=True)
def offline_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("CLIPFORGE_CACHE", str(cache))
    monkeypatch.setenv("CLIPFORGE_OFFLINE", "1")
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


@pytest.fixture(scope="session")
def colour_parts(colour_model: Path) -> tuple:
    """(model, preprocess) of the colour model, loaded once."""
    import clipforge

    return clipforge.load(colour_model)
