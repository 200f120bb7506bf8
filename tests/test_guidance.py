"""Guidance: the differentiable preprocessing against the ordinary one, seeded cutouts, the losses,
weighted prompts, plain autograd from outside, and generation judged by a second model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

import clipforge
from clipforge.applications.generate import PixelImage, SoftShapes, contact_sheet, generate, to_pil
from clipforge.applications.guidance import (Cutouts, Guidance, WeightedPrompt, cosine_distance,
                                             parse_weighted_prompt, preprocess_tensor, spherical_distance)
from clipforge.cli import main
from clipforge.images import CLIP_STD, ImageTransform
from clipforge.training.config import TrainConfig
from clipforge.training.trainer import train
from colour_model import COLOURS, write_colour_table

PROMPTS = [f"a {colour} square" for colour in COLOURS]
LEVELS = torch.tensor(CLIP_STD).view(3, 1, 1) * 255  # normalised units -> levels of 255


@pytest.fixture(scope="module")
def guide(colour_model):
    return clipforge.load_model(colour_model)


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    """A second colour model, trained with another seed: it never guides, it only judges."""
    root = tmp_path_factory.mktemp("judge")
    table = write_colour_table(root / "data")
    config = TrainConfig(model=str(root / "data" / "model.json"), vocab_size=600, train_data=[str(table)],
                         eval_data=[], steps=60, batch_size=32, lr=3e-3, warmup_steps=5, workers=0,
                         caption_choice="txt", output_dir=str(root / "run"), checkpoint_every=60, eval_every=0,
                         log_every=10, progress=False, precision="fp32", augment_shift=0, seed=1)
    return clipforge.load_model(train(config).model_dir)


def smooth_image(height: int, width: int, seed: int) -> np.ndarray:
    """An 8-bit RGB image of soft blobs (random values upsampled), like a picture rather than noise."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (max(height // 4, 1), max(width // 4, 1), 3), dtype=np.uint8))
    return np.asarray(small.resize((width, height), Image.Resampling.BILINEAR))


def levels_apart(pixels: np.ndarray, size: int) -> torch.Tensor:
    """|differentiable - ordinary| preprocessing of the same 8-bit pixels, in levels of 255, [3, size, size]."""
    ordinary = ImageTransform(size)(Image.fromarray(pixels))
    tensor = torch.from_numpy(pixels.copy()).permute(2, 0, 1).unsqueeze(0).float() / 255
    return (preprocess_tensor(tensor, size)[0] - ordinary).abs() * LEVELS


@pytest.mark.parametrize("height,width,size", [(64, 64, 32), (100, 37, 32), (33, 50, 32), (20, 20, 32),
                                               (17, 90, 64), (256, 256, 224), (96, 128, 32)])
def test_differentiable_preprocessing_matches_the_ordinary_within_its_tolerance(height, width, size):
    """The stated tolerance: within 1.1 levels of 255 per value, 0.3 on average (8-bit rounding in PIL)."""
    difference = levels_apart(smooth_image(height, width, seed=height * width), size)
    assert difference.max() <= 1.1 and difference.mean() <= 0.35


def test_differentiable_preprocessing_on_pixel_noise_stays_within_its_stated_bound():
    rng = np.random.default_rng(0)
    for height, width in [(64, 64), (100, 37), (40, 90)]:
        difference = levels_apart(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), 32)
        assert difference.max() <= 12.5 and difference.mean() <= 0.5


def test_preprocessing_keeps_the_gradient_and_refuses_bad_input():
    images = torch.rand(2, 3, 45, 70, requires_grad=True)
    out = preprocess_tensor(images, 32)
    assert out.shape == (2, 3, 32, 32)
    (gradient,) = torch.autograd.grad(out.square().sum(), images)
    assert gradient.abs().sum() > 0
    for bad in (torch.rand(3, 32, 32), torch.rand(1, 4, 32, 32), torch.zeros(1, 3, 8, 8, dtype=torch.uint8),
                torch.rand(0, 3, 8, 8)):
        with pytest.raises(ValueError, match="images must"):
            preprocess_tensor(bad, 32)


def test_cutouts_are_seeded_and_lie_inside_the_image_within_their_size_range():
    images = torch.rand(2, 3, 60, 80)
    first, again, other = Cutouts(count=16, seed=3), Cutouts(count=16, seed=3), Cutouts(count=16, seed=4)
    out = first(images, 32)
    assert out.shape == (16, 2, 3, 32, 32)
    assert torch.equal(out, again(images, 32)) and not torch.equal(out, other(images, 32))
    assert not torch.equal(first(images, 32), out)  # the next call draws new crops
    cutouts = Cutouts(count=200, min_fraction=0.25, max_fraction=0.75, power=2.0, seed=0)
    for top, left, side in cutouts.boxes(60, 80):
        assert 15 <= side <= 45 and 0 <= top <= 60 - side and 0 <= left <= 80 - side
    sides = [side for _, _, side in cutouts.boxes(60, 80)]
    assert np.median(sides) < 30  # power 2 favours small crops: the median is below the middle size


def test_cutout_flips_and_noise_are_applied_as_drawn():
    images = torch.rand(1, 3, 40, 40)
    plain = Cutouts(count=8, seed=1)(images, 32)
    flipped = Cutouts(count=8, flip=1.0, seed=1)(images, 32)
    assert torch.allclose(flipped, plain.flip(-1))
    noisy = Cutouts(count=8, noise=0.2, seed=1)(images, 32)
    assert noisy.shape == plain.shape and not torch.allclose(noisy, plain)
    with pytest.raises(ValueError):
        Cutouts(count=0)
    with pytest.raises(ValueError):
        Cutouts(min_fraction=0.8, max_fraction=0.5)


def test_spherical_and_cosine_distances_on_known_angles():
    x = torch.tensor([[1.0, 0.0]])
    orthogonal, opposite = torch.tensor([[0.0, 3.0]]), torch.tensor([[-2.0, 0.0]])
    assert float(spherical_distance(x, x)) == pytest.approx(0.0, abs=1e-6)
    assert float(spherical_distance(x, orthogonal)) == pytest.approx(math.pi ** 2 / 8, abs=1e-5)
    assert float(spherical_distance(x, opposite)) == pytest.approx(math.pi ** 2 / 2, abs=1e-5)
    assert float(cosine_distance(x, orthogonal)) == pytest.approx(1.0)
    assert float(cosine_distance(x, opposite)) == pytest.approx(2.0)


def test_weighted_prompts_parse_from_text():
    assert parse_weighted_prompt("a red square") == WeightedPrompt("a red square", 1.0)
    assert parse_weighted_prompt("a red square:2") == WeightedPrompt("a red square", 2.0)
    assert parse_weighted_prompt("a blue square:-0.5") == WeightedPrompt("a blue square", -0.5)
    assert parse_weighted_prompt("note: a red heart") == WeightedPrompt("note: a red heart", 1.0)
    with pytest.raises(ValueError, match="empty"):
        parse_weighted_prompt(" :2")
    with pytest.raises(ValueError, match="finite"):
        parse_weighted_prompt("a red square:inf")


def test_guidance_weights_prompts_and_negative_weights_push_away(guide):
    images = torch.rand(2, 3, 40, 40)
    mixed = Guidance(guide, [("a red square", 1.0), ("a blue square", -1.0)], cutouts=None)
    red = Guidance(guide, ["a red square"], cutouts=None)
    blue = Guidance(guide, ["a blue square"], cutouts=None)
    assert torch.allclose(mixed(images), (red(images) - blue(images)) / 2, atol=1e-6)
    cosine = Guidance(guide, ["a red square"], cutouts=None, loss="cosine")
    assert torch.allclose(cosine(images), 1 - red.cosine(images)[:, 0], atol=1e-5)
    with pytest.raises(ValueError, match="weight 0"):
        Guidance(guide, [("a red square", 0.0)])
    with pytest.raises(ValueError, match="prompt"):
        Guidance(guide, [])
    with pytest.raises(ValueError, match="unknown loss"):
        Guidance(guide, ["a red square"], loss="l2")


def test_guidance_is_plain_autograd_for_an_outside_sampler(guide):
    """A sampler holds its own tensor of any size and asks for the loss's gradient with torch.autograd."""
    images = torch.rand(2, 3, 50, 70, requires_grad=True)
    loss = Guidance(guide, "a green square", cutouts=Cutouts(count=4, seed=0))(images)
    assert loss.shape == (2,)
    (gradient,) = torch.autograd.grad(loss.sum(), images)
    assert gradient.shape == images.shape and torch.isfinite(gradient).all() and gradient.abs().sum() > 0
    assert all(parameter.grad is None for parameter in guide.parameters())


def test_guidance_lowers_the_loss_and_raises_the_judged_score(guide, judge):
    """Generated under the guide, judged by a model trained with another seed that never guided it."""
    target = PROMPTS.index("a blue square")
    result = generate(guide, "a blue square", size=48, steps=30, seed=0)
    assert result.losses[-1] < result.losses[0] - 0.05
    judged = Guidance(judge, PROMPTS, cutouts=None)
    before, after = judged.cosine(result.start.unsqueeze(0))[0], judged.cosine(result.image.unsqueeze(0))[0]
    assert after[target] > before[target] + 0.1
    assert int(after.argmax()) == target


def test_generation_is_seeded_and_keeps_frames(guide):
    first = generate(guide, "a red square", size=40, steps=6, seed=5, frames=3)
    again = generate(guide, "a red square", size=40, steps=6, seed=5, frames=3)
    assert torch.equal(first.image, again.image) and len(first.losses) == 6
    assert len(first.frames) == 4 and torch.equal(first.frames[0], first.start)
    assert torch.equal(first.frames[-1], first.image)
    assert not torch.equal(generate(guide, "a red square", size=40, steps=6, seed=6).image, first.image)


def test_soft_shapes_generate_and_both_parameterisations_stay_in_range(guide):
    result = generate(guide, "a yellow square", size=40, steps=15, parameterization="shapes", seed=0)
    assert result.losses[-1] < result.losses[0]
    for image in (PixelImage(40, seed=0)(), SoftShapes(40, seed=0)()):
        assert image.shape == (1, 3, 40, 40) and image.min() >= 0 and image.max() <= 1
    with pytest.raises(ValueError, match="unknown parameterisation"):
        generate(guide, "a red square", parameterization="vqgan")


def test_contact_sheet_lays_out_rows():
    red, blue = torch.zeros(3, 8, 8), torch.zeros(3, 8, 8)
    red[0], blue[2] = 1, 1
    sheet = contact_sheet([[red, blue], [blue]], gap=2)
    assert sheet.size == (18, 18)
    assert sheet.getpixel((0, 0)) == (255, 0, 0) and sheet.getpixel((10, 0)) == (0, 0, 255)
    assert sheet.getpixel((10, 10)) == (255, 255, 255)
    assert to_pil(red).getpixel((3, 3)) == (255, 0, 0)


def test_generate_command_writes_the_image_and_the_frames(colour_model, tmp_path, capsys):
    output = tmp_path / "out" / "red.png"
    code = main(["generate", "a red square", "a blue square:-0.5", "-o", str(output), "--model", str(colour_model),
                 "--steps", "4", "--size", "40", "--frames", "2", "--cutouts", "4", "--no-progress"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert Image.open(output).size == (40, 40)
    strip = tmp_path / "out" / "red-frames.png"
    assert summary["frames"] == str(strip) and Image.open(strip).size == (3 * 40 + 2 * 2, 40)
    assert set(summary["guide_cosine"]) == {"a red square", "a blue square"}


def test_generate_command_refuses_empty_prompts_and_odd_outputs(colour_model, tmp_path, capsys):
    assert main(["generate", "  ", "-o", str(tmp_path / "x.png"), "--model", str(colour_model)]) == 1
    assert "empty" in capsys.readouterr().err
    assert main(["generate", "a red square", "-o", str(tmp_path / "x.txt"), "--model", str(colour_model)]) == 1
    assert "image file name" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
