"""Reranking candidates for a prompt: files and folders, broken files, k, in-memory images, `clipforge rerank`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from clipforge.applications.rerank import rank_by_prompt, rerank_files, rerank_images
from clipforge.cli import main
from colour_model import COLOURS, colour_image


@pytest.fixture(scope="module")
def candidates(tmp_path_factory):
    """Three squares of each colour in nested folders, a broken PNG, a truncated one and a text file."""
    root = tmp_path_factory.mktemp("candidates")
    for colour in COLOURS:
        (root / colour).mkdir()
        for variant in range(3):
            colour_image(colour, variant, size=48).save(root / colour / f"{variant}.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    good = (root / "red" / "0.png").read_bytes()
    (root / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "notes.txt").write_text("not a candidate")
    return root


def test_rank_by_prompt_orders_by_cosine_and_keeps_ties_in_input_order():
    features = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.6, 0.8], [1.0, 0.0]])
    ranked = rank_by_prompt(features, torch.tensor([1.0, 0.0]), k=3)
    assert [hit.index for hit in ranked] == [1, 3, 2]
    assert ranked[2].cosine == pytest.approx(0.6) and ranked[2].clip_score == pytest.approx(1.5)
    with pytest.raises(ValueError, match="no candidates"):
        rank_by_prompt(torch.zeros(0, 2), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="k must be"):
        rank_by_prompt(features, torch.tensor([1.0, 0.0]), k=0)


def test_rerank_puts_the_prompts_colour_first_and_lists_broken_files(colour_parts, candidates):
    result = rerank_files(*colour_parts, "a green square", [candidates], batch_size=5)
    assert result.candidates == 12
    assert [path.rsplit("/", 2)[-2] for path in (hit.path for hit in result.ranked[:3])] == ["green"] * 3
    assert [hit.cosine for hit in result.ranked] == sorted((hit.cosine for hit in result.ranked), reverse=True)
    assert sorted(path for path, _ in result.skipped) == [str(candidates / "broken.png"),
                                                          str(candidates / "truncated.png")]
    assert all("cannot load image" in reason for _, reason in result.skipped)


def test_rerank_keeps_the_best_k(colour_parts, candidates):
    everything = rerank_files(*colour_parts, "a yellow square", [candidates])
    best = rerank_files(*colour_parts, "a yellow square", [candidates], k=2)
    assert [hit.path for hit in best.ranked] == [hit.path for hit in everything.ranked[:2]]


def test_rerank_without_candidates_or_readable_ones_is_a_clear_error(colour_parts, candidates, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no candidate images"):
        rerank_files(*colour_parts, "a red square", [tmp_path / "empty"])
    with pytest.raises(ValueError, match="none of the 2 candidate images could be read"):
        rerank_files(*colour_parts, "a red square", [candidates / "broken.png", candidates / "truncated.png"])
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        rerank_files(*colour_parts, "", [candidates])
    with pytest.raises(FileNotFoundError):
        rerank_files(*colour_parts, "a red square", [tmp_path / "missing"])


def test_rerank_images_ranks_in_memory_candidates(colour_parts):
    pixels = torch.stack([torch.from_numpy(np.asarray(colour_image(colour, 1, size=40), dtype=np.float32) / 255)
                          .permute(2, 0, 1) for colour in COLOURS])
    ranked = rerank_images(colour_parts[0], "a blue square", pixels)
    assert ranked[0].index == list(COLOURS).index("blue") and len(ranked) == len(COLOURS)
    with pytest.raises(ValueError, match="no candidates"):
        rerank_images(colour_parts[0], "a blue square", torch.zeros(0, 3, 8, 8))


def test_rerank_command_json_lists_ranking_and_skipped_files(colour_model, candidates, capsys):
    code = main(["rerank", "--prompt", "a red square", str(candidates), "-k", "4", "--json", "--no-progress",
                 "--model", str(colour_model)])
    captured = capsys.readouterr()
    assert code == 0
    result = json.loads(captured.out)
    assert result["prompt"] == "a red square" and result["candidates"] == 12
    assert [hit["rank"] for hit in result["ranked"]] == [1, 2, 3, 4]
    assert all("/red/" in hit["path"] for hit in result["ranked"][:3])
    assert {entry["path"] for entry in result["skipped"]} == {str(candidates / "broken.png"),
                                                              str(candidates / "truncated.png")}
    assert "skipped" in captured.err


def test_rerank_command_text_output_and_progress(colour_model, candidates, capsys):
    assert main(["rerank", "--prompt", "a blue square", str(candidates / "blue"), str(candidates / "red"),
                 "--model", str(colour_model)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 7 and "/blue/" in lines[0] and lines[-1].startswith("ranked 6 candidates")
    assert "reranking" in captured.err  # the progress bar


def test_rerank_command_with_no_candidates_fails_cleanly(colour_model, tmp_path, capsys):
    (tmp_path / "nothing").mkdir()
    assert main(["rerank", "--prompt", "a red square", str(tmp_path / "nothing"), "--model", str(colour_model)]) == 1
    assert "no candidate images" in capsys.readouterr().err
