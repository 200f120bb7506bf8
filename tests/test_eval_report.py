"""Evaluation beyond the classifier: metrics on tiny cases with known answers, the linear probe,
the shapes probes, and `clipforge eval` end to end (results, report, figures, resume)."""

import csv
import io
import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import clipforge
from clipforge.cli import main
from clipforge.data import ShardWriter
from clipforge.data.shapes import COLORS, KINDS, Probe, held_out_pairs
from clipforge.evaluation.datasets import EvalDataset
from clipforge.evaluation.linear_probe import linear_probe, stratified_split
from clipforge.evaluation.metrics import caption_win_rate, classification_metrics, confusion_matrix
from clipforge.evaluation.probes import caption_scores, single_shape_image
from clipforge.evaluation.suite import headline_metrics
from clipforge.evaluation.templates import load_templates
from clipforge.models import get_config
from clipforge.training.trainer import evaluate_for_training
from colour_model import COLOURS, MODEL, colour_image


def test_confusion_matrix_counts_true_rows_against_predicted_columns():
    matrix = confusion_matrix(torch.tensor([0, 2, 2, 1, 0]), torch.tensor([0, 2, 1, 1, 2]), 3)
    assert matrix.tolist() == [[1, 0, 0], [0, 1, 1], [1, 0, 1]]


def test_caption_win_rate_counts_a_tie_as_a_miss():
    scores = torch.tensor([[0.9, 0.1, 0.2], [0.5, 0.6, 0.1], [0.4, 0.4, 0.0], [0.3, 0.2, 0.29]])
    assert caption_win_rate(scores) == pytest.approx(50.0)


def test_top5_counts_the_target_among_the_five_best_of_many_classes():
    logits = torch.arange(7.0).repeat(3, 1)  # class 6 scores best, class 0 worst
    metrics = classification_metrics(logits, torch.tensor([6, 2, 1]), 7)
    assert metrics["top1"] == pytest.approx(100 / 3) and metrics["top5"] == pytest.approx(200 / 3)


def test_stratified_split_is_disjoint_and_keeps_class_proportions():
    labels = np.repeat([0, 1, 2], [50, 30, 2])
    train, validation, test = stratified_split(labels, seed=1)
    assert not set(train) & set(validation) and not set(train) & set(test) and not set(validation) & set(test)
    assert len(train) + len(validation) + len(test) == len(labels)
    assert np.bincount(labels[test], minlength=3).tolist() == [10, 6, 0]
    assert np.bincount(labels[validation], minlength=3).tolist() == [10, 6, 0]


def test_linear_probe_separates_separable_features_and_reports_the_chosen_c():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(120) % 3
    features = F.one_hot(labels, 8).float() * 4 + 0.3 * torch.randn(120, 8, generator=generator)
    result = linear_probe(features, labels, c_grid=(0.1, 1.0, 10.0))
    assert result["test_accuracy"] == 100.0 and result["C"] in (0.1, 1.0, 10.0)
    assert (result["train"], result["validation"], result["test"]) == (72, 24, 24)
    assert set(result["validation_accuracy_by_C"]) == {"0.1", "1.0", "10.0"}


def test_linear_probe_needs_two_classes_with_enough_samples():
    with pytest.raises(ValueError, match="two classes"):
        linear_probe(torch.randn(10, 4), torch.zeros(10, dtype=torch.long))


class LengthModel(nn.Module):
    """Images all map to (1, 0); a text to (1, its length), so its score says which text it was."""

    context_length = 1

    def __init__(self):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(0.0))

    def tokenize(self, texts, truncate=False):
        return torch.tensor([[len(text)] for text in texts])

    def encode_image(self, images, normalize=False):
        return F.normalize(torch.tensor([[1.0, 0.0]]).repeat(len(images), 1), dim=-1)

    def encode_text(self, tokens, normalize=False):
        return F.normalize(torch.stack([torch.ones(len(tokens)), tokens[:, 0].float()], dim=1), dim=-1)


def test_caption_scores_put_each_probes_true_caption_first():
    probes = [Probe(colour_image("red"), "x", ["xx", "xxx"], "spatial"),
              Probe(colour_image("blue"), "xxxx", ["x", "xx"], "spatial")]
    scores = caption_scores(LengthModel(), clipforge.ImageTransform(32), probes)
    expected = 1 / torch.tensor([[1.0, 4.0, 9.0], [16.0, 1.0, 4.0]]).add(1).sqrt()
    torch.testing.assert_close(scores, expected)
    assert caption_win_rate(scores) == 50.0


def test_single_shape_images_show_exactly_their_colour_and_vary():
    color, kind = sorted(held_out_pairs(0))[0]
    first, second = (np.asarray(single_shape_image(color, kind, index)) for index in (0, 1))
    for pixels in (first, second):
        assert (pixels == COLORS[color]).all(axis=-1).sum() > 20
        other_colours = [c for c in COLORS if c != color]
        assert not any((pixels == COLORS[c]).all(axis=-1).any() for c in other_colours)
    assert not np.array_equal(first, second)


# ---- clipforge eval, end to end, on the session's colour model and a random model beside it ----

@pytest.fixture(scope="module")
def colour_table(tmp_path_factory):
    """A labelled table of colour squares (6 per colour) with one broken image."""
    root = tmp_path_factory.mktemp("colour-table")
    with open(root / "colours.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "caption", "colour"])
        for colour in COLOURS:
            for variant in range(6):
                colour_image(colour, variant + 10).save(root / f"{colour}{variant}.png")
                writer.writerow([f"{colour}{variant}.png", f"a {colour} square", colour])
        (root / "broken.png").write_bytes(b"not an image")
        writer.writerow(["broken.png", "a broken square", "red"])
    (root / "square.txt").write_text("a {} square\n")
    return root


def untrained_like(colour_model, seed: int):
    """A freshly initialised model of the colour model's architecture, with its vocabulary."""
    tokenizer = clipforge.get_tokenizer(colour_model)
    config = get_config(MODEL)
    config.text.vocab_size, config.text.tokenizer = tokenizer.vocab_size, "bundled"
    torch.manual_seed(seed)
    model = clipforge.create_model(config)
    model.tokenizer = tokenizer
    return model


@pytest.fixture(scope="module")
def random_model(tmp_path_factory, colour_model):
    return clipforge.save_model(untrained_like(colour_model, 1), tmp_path_factory.mktemp("random-model"))


def eval_arguments(colour_model, random_model, colour_table, output):
    return ["eval", "--model", str(colour_model), "--model", str(random_model),
            "--dataset", str(colour_table / "colours.csv"), "--dataset", "shapes", "--label-key", "colour",
            "--templates", str(colour_table / "square.txt"), "--probe-count", "8", "--output", str(output)]


@pytest.fixture(scope="module")
def evaluated(colour_model, random_model, colour_table, tmp_path_factory):
    output = tmp_path_factory.mktemp("eval")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLIPFORGE_CACHE", str(tmp_path_factory.mktemp("cache")))
        assert main(eval_arguments(colour_model, random_model, colour_table, output)) == 0
    return output


def test_eval_measures_every_task_of_a_labelled_table(evaluated, colour_model, random_model):
    results = json.loads((evaluated / "results.json").read_text())
    assert results["format"] == 2
    trained, untrained = (results["results"][str(model)]["colours"] for model in (colour_model, random_model))
    assert trained["samples"] == 24
    assert trained["zeroshot"]["top1"] == 100.0 and trained["zeroshot"]["classes"] == sorted(COLOURS)
    assert untrained["zeroshot"]["top1"] < 100.0
    assert np.trace(trained["zeroshot"]["confusion_matrix"]) == 24
    assert set(trained["zeroshot"]["prompts"]) == {"{}", "a photo of a {}.", "ensemble"}
    assert set(trained["retrieval"]) == {"one_caption", "all_captions"}
    for protocol in ("one_caption", "all_captions"):  # these captions have no alternatives: the protocols agree
        retrieval = trained["retrieval"][protocol]
        assert retrieval["images"] == retrieval["captions"] == 24 and 0 <= retrieval["text_to_image_R@1"] <= 100
    assert trained["retrieval"]["one_caption"] == trained["retrieval"]["all_captions"]
    assert trained["linear_probe"]["test_accuracy"] == 100.0


def test_eval_counts_unreadable_samples(evaluated, colour_model):
    results = json.loads((evaluated / "results.json").read_text())
    assert results["results"][str(colour_model)]["colours"]["skipped"]["total"] == 1
    assert "1 skipped (not an image 1)" in (evaluated / "report.md").read_text()


def test_eval_runs_the_shapes_probes_with_their_chance_levels(evaluated, colour_model):
    probes = json.loads((evaluated / "results.json").read_text())["results"][str(colour_model)]["shapes"]["probes"]
    assert probes["counting_chance"] == 25.0 and probes["spatial_chance"] == pytest.approx(100 / 3)
    assert probes["pairs_chance"] == pytest.approx(100 / (len(COLORS) * len(KINDS)))
    assert probes["counting_probes"] == probes["spatial_probes"] == 8
    assert probes["held_out_pairs_images"] == 6 * len(held_out_pairs(0))
    for key in ("counting_win_rate", "spatial_win_rate", "seen_pairs_top1", "held_out_pairs_top1"):
        assert 0.0 <= probes[key] <= 100.0


def test_report_puts_models_side_by_side_and_links_figures_that_exist(evaluated, colour_model, random_model):
    report = (evaluated / "report.md").read_text()
    assert f"|  | `{colour_model}` | `{random_model}` |" in report
    for heading in ("## colours", "### Zero-shot", "### Retrieval, `one_caption`", "### Retrieval, `all_captions`",
                    "### Linear probe", "## shapes"):
        assert heading in report
    assert "| the class name alone, `{}` |" in report and "| `a photo of a {}.` |" in report
    figures = [line.split("](")[1].rstrip(")") for line in report.splitlines() if line.startswith("![")]
    assert len(figures) == 3  # the prompt chart and one confusion matrix per model
    assert all((evaluated / figure).read_bytes().startswith(b"\x89PNG") for figure in figures)


def test_eval_rerun_reuses_unchanged_results_and_redoes_changed_models(evaluated, colour_model, random_model,
                                                                         colour_table, tmp_path, capsys):
    output = tmp_path / "again"
    shutil.copytree(evaluated, output)
    before = json.loads((output / "results.json").read_text())
    original = (random_model / "model.safetensors").read_bytes()
    clipforge.save_model(untrained_like(colour_model, 2), random_model)
    capsys.readouterr()
    try:
        assert main(eval_arguments(colour_model, random_model, colour_table, output)) == 0
    finally:
        (random_model / "model.safetensors").write_bytes(original)
    log = capsys.readouterr().out
    assert log.count("unchanged") == 2 and f"{random_model} on colours: zeroshot" in log
    for name in ("colours_one_caption_image_to_text_R@10", "colours_all_captions_text_to_image_R@1",
                 "colours_zeroshot_top1", "colours_linear_probe_test_accuracy", "shapes_held_out_pairs_top1"):
        assert f"\n{name} " in log
    after = json.loads((output / "results.json").read_text())
    assert after["results"][str(colour_model)] == before["results"][str(colour_model)]
    assert after["models"][str(random_model)]["fingerprint"] != before["models"][str(random_model)]["fingerprint"]


def test_eval_refuses_a_task_the_dataset_lacks(colour_table, colour_model, tmp_path, capsys):
    code = main(["eval", "--model", str(colour_model), "--dataset", str(colour_table / "colours.csv"),
                 "--task", "zeroshot", "--output", str(tmp_path)])
    assert code == 1 and "--label-key" in capsys.readouterr().err


def test_eval_of_a_builtin_set_without_prepared_data_says_to_prepare(colour_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CLIPFORGE_DATA", str(tmp_path / "nothing"))
    assert main(["eval", "--model", str(colour_model), "--dataset", "openmoji", "--output", str(tmp_path)]) == 1
    assert "clipforge data prepare" in capsys.readouterr().err


def test_eval_of_a_prepared_set_uses_its_tasks_and_splits_seen_from_unseen(colour_model, tmp_path, monkeypatch):
    """A stand-in "openmoji" prepared in tmp: its tasks.json entry (group labels, the emoji set,
    retrieval, seen/unseen split) drives the evaluation."""
    with ShardWriter(tmp_path / "data" / "openmoji", shard_size=100) as writer:
        for number, colour in enumerate(c for c in COLOURS for _ in range(4)):
            png = io.BytesIO()
            colour_image(colour, number).save(png, format="PNG")
            captions = [f"a {colour} square", f"an emoji of a {colour} square"]
            writer.write(f"{number:04d}", png.getvalue(), "png", captions[0],
                         {"group": colour, "seen": number % 4 != 0, "captions": captions})
    shards = [{"file": str(path.relative_to(tmp_path / "data"))} for path in writer.shards]
    (tmp_path / "data" / "manifest.json").write_text(json.dumps({"sets": {"openmoji": {"split": "eval",
                                                                                       "shards": shards}}}))
    monkeypatch.setenv("CLIPFORGE_DATA", str(tmp_path / "data"))
    assert main(["eval", "--model", str(colour_model), "--dataset", "openmoji", "--output", str(tmp_path / "out")]) == 0
    figures = json.loads((tmp_path / "out" / "results.json").read_text())["results"][str(colour_model)]["openmoji"]
    assert figures["zeroshot"]["templates"] == "emoji"
    assert figures["zeroshot"]["n_templates"] == len(load_templates("emoji"))
    assert (figures["zeroshot"]["seen_samples"], figures["zeroshot"]["unseen_samples"]) == (12, 4)
    assert figures["retrieval"]["one_caption"]["captions"] == 16  # each image's own caption
    assert figures["retrieval"]["all_captions"]["captions"] == 32  # and its alternative
    for protocol in ("one_caption", "all_captions"):
        retrieval = figures["retrieval"][protocol]
        assert (retrieval["images"], retrieval["seen"]["images"], retrieval["unseen"]["images"]) == (16, 12, 4)
    assert set(figures) >= {"zeroshot", "retrieval", "linear_probe"}
    report = (tmp_path / "out" / "report.md").read_text()
    assert "### Retrieval, `one_caption`: 16 images, 16 captions" in report
    assert "### Retrieval, `all_captions`: 16 images, 32 captions" in report
    assert report.count("| unseen, text → image (4 images): R@1 / R@5 / R@10 |") == 2
    metrics = headline_metrics("openmoji", figures)
    assert {"openmoji_one_caption_image_to_text_R@10", "openmoji_all_captions_seen_text_to_image_R@1",
            "openmoji_all_captions_unseen_image_to_text_R@5", "openmoji_zeroshot_top1", "openmoji_zeroshot_seen_top1",
            "openmoji_linear_probe_test_accuracy"} <= set(metrics)
    assert metrics["openmoji_one_caption_seen_text_to_image_R@1"] == figures["retrieval"]["one_caption"]["seen"][
        "text_to_image_R@1"]
    assert not any(name.startswith("openmoji_image_to_text") for name in metrics)


def test_training_reports_the_figures_and_names_of_clipforge_eval(evaluated, colour_model, colour_table):
    """One implementation per measurement: the training loop's evaluation is `clipforge eval`'s."""
    results = json.loads((evaluated / "results.json").read_text())
    figures = results["results"][str(colour_model)]["colours"]
    expected = {name: value for name, value in headline_metrics("colours", figures).items()
                if "linear_probe" not in name}  # training leaves the probe out
    model, transform = clipforge.load(colour_model)
    dataset = EvalDataset("colours", str(colour_table / "colours.csv"),
                          {"retrieval": True, "zeroshot": {"label": "colour", "templates": str(colour_table / "square.txt")}})
    measured = evaluate_for_training(model.train(), transform, [dataset])
    assert measured.keys() == expected.keys() and "colours_zeroshot_top1" in measured
    assert measured == pytest.approx(expected)
    assert model.training  # evaluation leaves the model as it found it
