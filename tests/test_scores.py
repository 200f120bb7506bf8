"""CLIPScore in Hessel's and torchmetrics' conventions, RefCLIPScore, `score_images` and `clipforge score`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import clipforge
from clipforge.applications.scores import (encode_image_files, hessel_clip_score, list_candidates, load_references,
                                           ref_clip_score, score_images, torchmetrics_clip_score)
from clipforge.cli import main
from colour_model import COLOURS, colour_image

PROMPTS = [f"a {colour} square" for colour in COLOURS]


@pytest.fixture(scope="module")
def colour_files(tmp_path_factory):
    """One square per colour, in COLOURS order, at sizes other than the model's 32 px."""
    folder = tmp_path_factory.mktemp("squares")
    paths = []
    for number, colour in enumerate(COLOURS):
        path = folder / f"{colour}.png"
        colour_image(colour, number, size=32 + 8 * number).resize((32 + 8 * number, 40)).save(path)
        paths.append(str(path))
    return paths


def unit(*values: float) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.tensor([values], dtype=torch.float32), dim=-1)


# The two-dimensional example, by hand: the image is (1, 0); caption A is at 60 degrees, so cos = 1/2;
# caption B is (-0.6, 0.8), cos = -0.6. A's references: (0, 1) at cos(A, r) = sin 60 = 0.8660 and
# (1, 0) at 1/2, so its best reference similarity is 0.8660.
IMAGE = unit(1.0, 0.0)
CAPTION_A = unit(0.5, math.sqrt(3) / 2)
CAPTION_B = unit(-0.6, 0.8)
REFERENCES_A = torch.cat([unit(0.0, 1.0), unit(1.0, 0.0)])


def test_hessel_convention_on_the_hand_computed_example():
    cosine = clipforge.similarity(IMAGE, torch.cat([CAPTION_A, CAPTION_B]))[0]
    # 2.5 * max(0.5, 0) = 1.25 and 2.5 * max(-0.6, 0) = 0
    assert hessel_clip_score(cosine).tolist() == pytest.approx([1.25, 0.0], abs=1e-6)


def test_torchmetrics_convention_on_the_hand_computed_example():
    cosine = clipforge.similarity(IMAGE, torch.cat([CAPTION_A, CAPTION_B]))[0]
    # 100 * max(0.5, 0) = 50 and 100 * max(-0.6, 0) = 0
    assert torchmetrics_clip_score(cosine).tolist() == pytest.approx([50.0, 0.0], abs=1e-4)


def test_ref_clip_score_on_the_hand_computed_example():
    image_cosine = clipforge.similarity(IMAGE, CAPTION_A)[0, 0]
    reference_cosine = clipforge.similarity(CAPTION_A, REFERENCES_A)[0]
    # harmonic mean of 1.25 and 0.8660: 2 * 1.25 * 0.8660 / (1.25 + 0.8660) = 1.023175
    assert float(ref_clip_score(image_cosine, reference_cosine)) == pytest.approx(1.023175, abs=1e-5)


def test_ref_clip_score_is_zero_when_either_side_is():
    assert float(ref_clip_score(torch.tensor(-0.3), torch.tensor([0.9]))) == 0.0
    assert float(ref_clip_score(torch.tensor(0.4), torch.tensor([-0.2, -0.1]))) == 0.0
    with pytest.raises(ValueError, match="at least one reference"):
        ref_clip_score(torch.tensor(0.4), torch.zeros(0))


@pytest.mark.reference
def test_torchmetrics_clip_score_equals_clipforge_on_an_exported_model(colour_parts, colour_files, tmp_path):
    """torchmetrics' CLIPScore, given the colour model exported to a Hugging Face folder, scores each
    image-caption pair as clipforge does within 1e-4 (images of several sizes, so resizing is compared too)."""
    transformers = pytest.importorskip("transformers")
    multimodal = pytest.importorskip("torchmetrics.multimodal.clip_score")
    model, preprocess = colour_parts
    clipforge.export_huggingface(model, tmp_path / "hf")
    hf_model = transformers.CLIPModel.from_pretrained(tmp_path / "hf").eval()
    processor = transformers.CLIPProcessor(
        image_processor=transformers.CLIPImageProcessor.from_pretrained(tmp_path / "hf"),
        tokenizer=transformers.CLIPTokenizer.from_pretrained(tmp_path / "hf"))

    class FeaturesOnly(torch.nn.Module):
        """transformers 5 returns output objects from get_*_features; torchmetrics wants the tensor."""

        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config

        def get_image_features(self, *args, **kwargs):
            out = self.inner.get_image_features(*args, **kwargs)
            return out if isinstance(out, torch.Tensor) else out.pooler_output

        def get_text_features(self, *args, **kwargs):
            out = self.inner.get_text_features(*args, **kwargs)
            return out if isinstance(out, torch.Tensor) else out.pooler_output

    metric = multimodal.CLIPScore(model_name_or_path=lambda: (FeaturesOnly(hf_model), processor))
    ours = score_images(model, preprocess, colour_files, PROMPTS).torchmetrics
    pixels = [torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1) for path in colour_files]
    with torch.no_grad():
        for row, image in enumerate(pixels):
            for column, prompt in enumerate(PROMPTS):
                metric.reset()
                assert float(metric(image, prompt)) == pytest.approx(float(ours[row, column]), abs=1e-4)
        metric.reset()  # over a batch of matching pairs torchmetrics averages: ours' mean, all being positive
        assert float(metric(pixels, PROMPTS)) == pytest.approx(float(ours.diag().mean()), abs=1e-4)
    assert bool((ours.diag() > 0).all())


def test_score_images_ranks_each_square_under_its_own_colour(colour_parts, colour_files):
    table = score_images(*colour_parts, colour_files, PROMPTS)
    assert table.images == colour_files and table.skipped == []
    assert table.cosine.argmax(dim=1).tolist() == list(range(len(COLOURS)))
    assert torch.allclose(table.hessel, 2.5 * table.cosine.clamp(min=0))
    assert torch.allclose(table.torchmetrics, 100 * table.cosine.clamp(min=0))


def test_score_images_gives_ref_clip_score_with_references(colour_parts, colour_files):
    references = {colour_files[0]: ["a red square", "red"], "blue.png": ["a blue square"],
                  "green.png": ["a green square"], "yellow.png": ["a yellow square"]}
    table = score_images(*colour_parts, colour_files, PROMPTS, references=references)
    refs = table.ref_clip_score
    assert refs.shape == (4, 4)
    model = colour_parts[0]
    prompts = torch.nn.functional.normalize(model.encode_text(model.tokenize(PROMPTS)), dim=-1)
    red_refs = torch.nn.functional.normalize(model.encode_text(model.tokenize(["a red square", "red"])), dim=-1)
    expected = ref_clip_score(table.cosine[0, 0], (prompts[0] @ red_refs.t()).detach())
    assert float(refs[0, 0]) == pytest.approx(float(expected), abs=1e-5)
    # the candidate equals a reference, so its reference side is 1 and RefCLIP-S = 2 * s / (s + 1)
    clip_s = float(table.hessel[0, 0])
    assert float(refs[0, 0]) == pytest.approx(2 * clip_s / (clip_s + 1), abs=1e-4)
    assert table.rows()[0]["scores"][0]["ref_clip_score"] == pytest.approx(float(refs[0, 0]))


def test_broken_and_missing_images_are_skipped_and_named(colour_parts, colour_files, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    table = score_images(*colour_parts, [colour_files[0], str(broken), str(empty), str(tmp_path / "gone.png")],
                         PROMPTS)
    assert table.images == [colour_files[0]]
    assert [path for path, _ in table.skipped] == [str(broken), str(empty), str(tmp_path / "gone.png")]
    assert all("cannot load image" in reason for _, reason in table.skipped)


def test_no_readable_image_empty_prompts_and_no_images_are_clear_errors(colour_parts, colour_files, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="none of the 1 images could be read"):
        score_images(*colour_parts, [str(broken)], PROMPTS)
    with pytest.raises(ValueError, match="prompt 2 is empty"):
        score_images(*colour_parts, colour_files, ["a red square", "   "])
    with pytest.raises(ValueError, match="at least one prompt"):
        score_images(*colour_parts, colour_files, [])
    with pytest.raises(ValueError, match="at least one image"):
        score_images(*colour_parts, [], PROMPTS)


def test_encode_image_files_batches_agree_with_one_batch(colour_parts, colour_files):
    one = encode_image_files(*colour_parts, colour_files, batch_size=64)
    small = encode_image_files(*colour_parts, colour_files, batch_size=3)
    assert torch.allclose(one.features, small.features, atol=1e-5)


def test_references_files_text_and_json(tmp_path):
    (tmp_path / "refs.txt").write_text("a red square\n\nred\n")
    assert load_references(tmp_path / "refs.txt") == ["a red square", "red"]
    (tmp_path / "refs.json").write_text(json.dumps({"a.png": "red", "b.png": ["blue", "a blue square"]}))
    assert load_references(tmp_path / "refs.json") == {"a.png": ["red"], "b.png": ["blue", "a blue square"]}
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_references(tmp_path / "bad.json")
    (tmp_path / "blank.json").write_text(json.dumps(["red", ""]))
    with pytest.raises(ValueError, match="reference caption 2 is empty"):
        load_references(tmp_path / "blank.json")


def test_list_candidates_walks_folders_and_refuses_missing_paths(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "one.png").write_bytes(b"x")
    (tmp_path / "a" / "b" / "two.JPG").write_bytes(b"x")
    (tmp_path / "a" / "notes.txt").write_text("x")
    (tmp_path / "a" / ".hidden.png").write_bytes(b"x")
    found = list_candidates([tmp_path / "a", tmp_path / "a" / "one.png"])
    assert found == [str(tmp_path / "a" / "b" / "two.JPG"), str(tmp_path / "a" / "one.png")]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_candidates([tmp_path / "nowhere"])


def test_score_command_prints_one_json_object_per_image(colour_model, colour_files, capsys):
    code = main(["score", *colour_files[:2], "--prompt", "a red square", "--prompt", "a blue square",
                 "--model", str(colour_model), "--json"])
    assert code == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["image"] for row in rows] == colour_files[:2]
    assert [[entry["prompt"] for entry in row["scores"]] for row in rows] == [["a red square", "a blue square"]] * 2
    first = rows[0]["scores"][0]
    assert first["clip_score_hessel"] == pytest.approx(2.5 * max(first["cosine"], 0))
    assert first["clip_score_torchmetrics"] == pytest.approx(100 * max(first["cosine"], 0), abs=1e-4)
    assert rows[0]["scores"][0]["cosine"] > rows[0]["scores"][1]["cosine"]


def test_score_command_with_references_and_a_broken_file(colour_model, colour_files, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"nope")
    references = tmp_path / "refs.txt"
    references.write_text("a red square\n")
    code = main(["score", colour_files[0], str(broken), "--prompt", "a red square", "--references",
                 str(references), "--model", str(colour_model)])
    captured = capsys.readouterr()
    assert code == 1
    assert colour_files[0] in captured.out and "RefCLIP-S" in captured.out
    assert "skipped" in captured.err and "1 of 2 images could not be read" in captured.err


def test_score_command_refuses_an_empty_prompt(colour_model, colour_files, capsys):
    assert main(["score", colour_files[0], "--prompt", " ", "--model", str(colour_model)]) == 1
    assert "prompt 1 is empty" in capsys.readouterr().err
