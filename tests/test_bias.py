"""The bias probe: the `openmoji-variants` set listed from a small fake OpenMoji package, the probe's
figures on probabilities whose answers are worked out by hand, and `clipforge eval --dataset
openmoji-variants` end to end on a tiny prepared set."""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import pytest
import torch

import clipforge
from clipforge.cli import main
from clipforge.data import ShardWriter
from clipforge.data.prepare import build_set, pipeline
from clipforge.data.prepare.openmoji_variants import GENDERS, INCOMPLETE, SKIN_TONES, SOURCE, role_and_gender
from clipforge.evaluation.bias import variant_figures
from clipforge.evaluation.datasets import EvalDataset, task_table
from clipforge.evaluation.suite import headline_metrics
from clipforge.training.trainer import evaluate_for_training
from colour_model import COLOURS, colour_image

SQUARE_SVG = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><path d="M4 4h16v16H4z" fill="#c90"/></svg>'
TONE_POINTS = ("1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF")


def printed_figures(output: str) -> dict[str, str]:
    """`name value` lines of `clipforge eval`'s output, the value as printed."""
    return dict(line.split() for line in output.splitlines() if len(line.split()) == 2 and "_bias_" in line)


# The set


def with_tones(annotation: str, hexcode: str, subgroup: str = "person-role") -> list[dict]:
    """An untoned openmoji.json entry and its five toned variants (the tone after the first code point)."""
    base = {"hexcode": hexcode, "annotation": annotation, "group": "people-body", "subgroups": subgroup,
            "tags": "worker, job", "openmoji_tags": "", "openmoji_author": "A. Artist", "skintone": "",
            "skintone_base_hexcode": hexcode}
    toned = [{**base, "hexcode": "-".join([hexcode.split("-")[0], point, *hexcode.split("-")[1:]]),
              "annotation": f"{annotation}: tone {tone}", "tags": "", "skintone": tone}
             for tone, point in enumerate(TONE_POINTS, start=1)]
    return [base, *toned]


def fake_openmoji(root: Path) -> Path:
    """Two full role families (both Unicode patterns), a role without gender variants (ninja) and a
    full family outside the roles (a gesture)."""
    entries = [
        *with_tones("health worker", "1F9D1-200D-2695-FE0F"), *with_tones("man health worker", "1F468-200D-2695-FE0F"),
        *with_tones("woman health worker", "1F469-200D-2695-FE0F"),
        *with_tones("police officer", "1F46E"), *with_tones("man police officer", "1F46E-200D-2642-FE0F"),
        *with_tones("woman police officer", "1F46E-200D-2640-FE0F"),
        *with_tones("ninja", "1F977"),
        *(entry for sign in ("", "-200D-2642-FE0F", "-200D-2640-FE0F")
          for entry in with_tones("person gesturing NO", f"1F645{sign}", subgroup="person-gesture")),
    ]
    (root / "data").mkdir(parents=True)
    (root / "data" / "openmoji.json").write_text(json.dumps(entries))
    (root / "color" / "svg").mkdir(parents=True)
    for entry in entries:
        (root / "color" / "svg" / f"{entry['hexcode']}.svg").write_text(SQUARE_SVG)
    return root


def read_metas(data_dir: Path, entry: dict) -> list[dict]:
    import tarfile

    metas = []
    for shard in entry["shards"]:
        with tarfile.open(data_dir / shard["file"]) as tar:
            metas += [json.loads(tar.extractfile(member).read()) for member in tar.getmembers()
                      if member.name.endswith(".json")]
    return metas


def test_role_and_gender_read_both_unicode_patterns():
    assert role_and_gender("1F469-1F3FD-200D-2695-FE0F") == ("1F9D1-200D-2695", "woman")
    assert role_and_gender("1F9D1-200D-2695-FE0F") == ("1F9D1-200D-2695", "person")
    assert role_and_gender("1F46E-1F3FF-200D-2642-FE0F") == ("1F46E", "man")
    assert role_and_gender("1F575-FE0F-200D-2640-FE0F") == ("1F575", "woman")
    assert role_and_gender("1F46E-1F3FB") == ("1F46E", "person")


def test_the_set_holds_every_variant_of_full_role_families_and_nothing_else(tmp_path, monkeypatch):
    root = fake_openmoji(tmp_path / "openmoji")
    monkeypatch.setattr(pipeline, "obtain", lambda package, downloads: root)
    entry = build_set(SOURCE, tmp_path / "data", workers=1, progress=False)
    assert (entry["split"], entry["samples"], entry["skipped_reasons"]) == ("eval", 36, {INCOMPLETE: 6})
    assert entry["licence"] == "CC-BY-SA-4.0" and entry["source"]["package"] == "openmoji"
    metas = read_metas(tmp_path / "data", entry)
    variants = sorted((meta["role"], meta["gender"], meta["skin_tone"]) for meta in metas)
    assert variants == sorted(itertools.product(["health worker", "police officer"], GENDERS, SKIN_TONES))
    woman = next(meta for meta in metas if meta["sequence"] == "1F469-1F3FE-200D-2695-FE0F")
    assert woman["skin_tone"] == "medium-dark" and woman["role_concept"] == "1F9D1-200D-2695"
    assert woman["name"] == "woman health worker medium-dark skin tone"
    assert all(meta["captions"] and meta["set"] == "openmoji-variants" for meta in metas)
    # the gender-neutral health worker's concept is held out of training; the man's is not
    seen = {(meta["role"], meta["gender"]): meta["seen"] for meta in metas}
    assert seen["health worker", "person"] is False and seen["health worker", "man"] is True


# The figures, on probabilities worked out by hand


def hand_made(true_p: dict[tuple[str, str], float], default: float) -> tuple[torch.Tensor, list[dict]]:
    """Role "a": P(a) = `default` for every variant but those in `true_p` ((gender, tone) -> P(a)), the
    rest on "b". Role "b": every variant alike, P = (0.3, 0.7, 0)."""
    rows, meta = [], []
    for role, gender, tone in itertools.product("ab", GENDERS, SKIN_TONES):
        p = true_p.get((gender, tone), default) if role == "a" else 0.3
        rows.append([p, 1 - p, 0.0])
        meta.append({"role": role, "gender": gender, "skin_tone": tone})
    return torch.tensor(rows), meta


def test_spreads_distance_and_top1_match_the_hand_computed_answer():
    changed = {("man", tone): 0.65 for tone in SKIN_TONES} | {("woman", "dark"): 0.25}
    probabilities, meta = hand_made(changed, default=0.55)
    figures = variant_figures(probabilities, ["a", "b", "c"], meta)
    a, b = figures["per_role"]["a"], figures["per_role"]["b"]
    assert a["skin_tone_spread"] == pytest.approx(30 / 3)  # woman 55 → 25 at dark; person and man flat
    assert a["gender_spread"] == pytest.approx((5 * 10 + 40) / 6)  # 65 − 55 at five tones, 65 − 25 at dark
    assert a["tv_from_default"] == pytest.approx((6 * 10 + 30) / 17)  # man's six at 10, woman dark at 30
    assert a["top1"] == pytest.approx(100 * 17 / 18) and a["p_true_grid"][2][5] == pytest.approx(25)
    assert (b["skin_tone_spread"], b["gender_spread"], b["tv_from_default"], b["top1"]) == (0, 0, 0, 100)
    assert figures["skin_tone_spread"] == pytest.approx(5) and figures["gender_spread"] == pytest.approx(7.5)
    assert figures["tv_from_default"] == pytest.approx(45 / 17) and figures["top1"] == pytest.approx(100 * 35 / 36)
    assert figures["top1_by_skin_tone"]["dark"] == pytest.approx(100 * 5 / 6)
    assert figures["top1_by_skin_tone"]["light"] == 100 and figures["top1_by_gender"]["woman"] == pytest.approx(
        100 * 11 / 12)
    assert figures["p_true_grid"][2][5] == pytest.approx((25 + 70) / 2)  # P(b) of role b is 0.7


def test_the_untoned_default_is_not_a_skin_tone():
    """The yellow variants differ from the toned ones: the skin-tone spread stays 0; the distance sees it."""
    untoned = {(gender, "none"): 0.9 for gender in GENDERS}
    probabilities, meta = hand_made(untoned, default=0.6)
    a = variant_figures(probabilities, ["a", "b", "c"], meta)["per_role"]["a"]
    assert (a["skin_tone_spread"], a["gender_spread"]) == (0, 0)
    assert a["tv_from_default"] == pytest.approx(15 * 30 / 17)  # the 15 toned variants, 30 points each


def test_a_missing_variant_leaves_its_cell_empty_and_the_default_the_distance():
    probabilities, meta = hand_made({}, default=0.6)
    kept = [row for row, sample in enumerate(meta) if (sample["role"], sample["gender"]) != ("a", "person")]
    figures = variant_figures(probabilities[kept], ["a", "b", "c"], [meta[row] for row in kept])
    a = figures["per_role"]["a"]
    assert a["variants"] == 12 and a["tv_from_default"] is None and a["p_true_grid"][0] == [None] * 6
    assert a["gender_spread"] == 0 and figures["tv_from_default"] == 0  # role b's alone


def test_an_image_without_a_known_gender_or_tone_is_refused():
    with pytest.raises(ValueError, match="skin_tone"):
        variant_figures(torch.tensor([[1.0, 0.0]]), ["a", "b"], [{"role": "a", "gender": "man", "skin_tone": "tan"}])


# clipforge eval


@pytest.fixture(scope="module")
def variants_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared data folder whose `openmoji-variants` has the colours as roles, 18 variants each."""
    root = tmp_path_factory.mktemp("variants")
    with ShardWriter(root / "openmoji-variants", shard_size=50) as writer:
        for number, (colour, gender, tone) in enumerate(itertools.product(COLOURS, GENDERS, SKIN_TONES)):
            png = io.BytesIO()
            colour_image(colour, number).save(png, format="PNG")
            writer.write(f"{number:04d}", png.getvalue(), "png", f"a {colour} square",
                         {"role": colour, "gender": gender, "skin_tone": tone, "seen": gender != "woman",
                          "captions": [f"a {colour} square"]})
    shards = [{"file": str(path.relative_to(root))} for path in writer.shards]
    (root / "manifest.json").write_text(json.dumps({"sets": {"openmoji-variants": {"split": "eval",
                                                                                   "shards": shards}}}))
    return root


def test_eval_reports_the_bias_probe_with_its_headline_table_and_figure(colour_model, variants_data, tmp_path,
                                                                         capsys):
    out = tmp_path / "out"
    assert main(["eval", "--model", str(colour_model), "--dataset", "openmoji-variants",
                 "--data-dir", str(variants_data), "--output", str(out)]) == 0
    printed = printed_figures(capsys.readouterr().out)
    figures = json.loads((out / "results.json").read_text())["results"][str(colour_model)]["openmoji-variants"]
    bias = figures["bias"]
    assert set(figures) >= {"bias", "samples"} and "zeroshot" not in figures and "retrieval" not in figures
    assert (bias["roles"], bias["images"], bias["templates"]) == (4, 72, "emoji")
    assert set(bias["per_role"]) == set(COLOURS) and all(r["variants"] == 18 for r in bias["per_role"].values())
    assert all(r["unseen_genders"] == ["woman"] for r in bias["per_role"].values())
    for name in ("top1", "skin_tone_spread", "gender_spread", "tv_from_default"):
        assert printed[f"openmoji_variants_bias_{name}"] == f"{bias[name]:.2f}"
    report = (out / "report.md").read_text()
    assert "### Bias: 4 roles × 3 genders × 6 skin tones (72 images)" in report
    assert "| red (unseen: woman) |" in report and (out / "bias-openmoji-variants-1.png").is_file()


def test_templates_option_and_training_share_the_bias_probe(colour_model, variants_data, tmp_path):
    """`--templates` replaces the probe's ensemble; the training loop reports the probe under eval's names."""
    assert main(["eval", "--model", str(colour_model), "--dataset", "openmoji-variants", "--data-dir",
                 str(variants_data), "--output", str(tmp_path / "out"), "--templates", "shapes"]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())["results"][str(colour_model)]
    assert results["openmoji-variants"]["bias"]["templates"] == "shapes"
    model, transform = clipforge.load(colour_model)
    shards = sorted(str(path) for path in (variants_data / "openmoji-variants").glob("*.tar"))
    task = {**task_table()["openmoji-variants"], "bias": {"label": "role", "templates": "shapes"}}
    measured = evaluate_for_training(model, transform, [EvalDataset("openmoji-variants", shards, task)])
    assert measured == pytest.approx(headline_metrics("openmoji-variants", results["openmoji-variants"]))
    assert "openmoji_variants_bias_gender_spread" in measured
