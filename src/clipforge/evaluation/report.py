"""`report.md` and its figures from `results.json`: one section per dataset, one table per task,
the models side by side in columns. Figures are linked relative to the report, so the folder
can be moved or committed as it is."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.atomic import write_atomically
from .plots import plot_confusion_matrix, plot_prompt_comparison, plot_variant_grid

REPORT_FILE = "report.md"


def write_report(results: dict[str, Any], output_dir: str | os.PathLike) -> Path:
    """Write `report.md` (and its PNGs) for `results` as `runner.run_evaluation` gathers them."""
    output = Path(output_dir)
    models = list(results["models"])
    lines = ["# Evaluation report", "",
             "Written by `clipforge eval` (every figure is in `results.json` beside this file). "
             "Figures are percentages unless they are ranks or counts.", "",
             *_table(["", *map(_code, models)], [
                 ("image tower", [f"{m['vision']}, {m['image_size']} px" for m in results["models"].values()]),
                 ("embedding width", [m["embed_dim"] for m in results["models"].values()]),
                 ("parameters", [f"{m['parameters'] / 1e6:.1f}M" for m in results["models"].values()]),
             ])]
    for dataset in results["datasets"]:
        per_model = {model: results["results"][model][dataset] for model in models}
        lines += ["", f"## {dataset}", ""]
        if "probes" in next(iter(per_model.values())):
            lines += _probes_section(per_model)
        else:
            lines += _dataset_section(dataset, per_model, output)
    path = output / REPORT_FILE
    write_atomically(path, lambda partial: partial.write_text("\n".join(lines) + "\n"))
    return path


def _dataset_section(dataset: str, per_model: dict[str, dict[str, Any]], output: Path) -> list[str]:
    first = next(iter(per_model.values()))
    lines = []
    if "samples" in first:  # not when localization, which reads the set itself, is the only task
        skipped = first["skipped"]["total"]
        reasons = ", ".join(f"{reason} {entry['count']}" for reason, entry in first["skipped"]["reasons"].items())
        lines.append(f"{first['samples']:,} images read, {skipped:,} skipped" + (f" ({reasons})." if skipped else "."))
    if "zeroshot" in first:
        lines += _zeroshot_section(dataset, {model: figures["zeroshot"] for model, figures in per_model.items()},
                                   output)
    for protocol in first.get("retrieval", {}):
        lines += _retrieval_section(protocol, {model: figures["retrieval"][protocol]
                                               for model, figures in per_model.items()})
    if "linear_probe" in first:
        lines += _linear_probe_section({model: figures["linear_probe"] for model, figures in per_model.items()})
    if "bias" in first:
        lines += _bias_section(dataset, {model: figures["bias"] for model, figures in per_model.items()}, output)
    if "localization" in first:
        lines += _localization_section({model: figures["localization"] for model, figures in per_model.items()})
    return lines


def _localization_section(per_model: dict[str, dict[str, Any]]) -> list[str]:
    first = next(iter(per_model.values()))
    chance = first["chance"]
    lines = ["", f"### Localization: {first['scenes']:,} composite scenes, {first['objects']:,} objects, "
                 f"{len(first['vocabulary'])} names", "",
             f"Two to four of the set's glyphs pasted at random sizes and places on plain or textured "
             f"{first['canvas']} px canvases (`clipforge.data.scenes`); every name of the vocabulary (through the "
             f"`{first['templates']}` template ensemble) is mapped on every scene. Pointing game: the map's peak "
             "lies inside the named object's box. Box AP@0.5: PASCAL VOC's, one class per name. Dense: the image "
             "tower's own locations (MaskCLIP); crops: sliding windows embedded whole (the baseline); boxes "
             f"around the regions above {first['dense']['box_threshold']:g} (dense) and "
             f"{first['crops']['box_threshold']:g} (crops) of the way from a map's median to its peak. Chance: a "
             "random point; random boxes of the glyphs' sizes.", ""]
    rows = []
    for method, label in (("dense", "dense maps"), ("crops", "crops (baseline)")):
        rows.append((f"pointing game, {label}", _number(chance["pointing_game"]),
                     [_number(figures[method]["pointing_game"]) for figures in per_model.values()]))
        rows.append((f"pointing game, {label}: plain / textured backgrounds", "",
                     [" / ".join("–" if figures[method][key] is None else _number(figures[method][key])
                                 for key in ("pointing_game_plain", "pointing_game_textured"))
                      for figures in per_model.values()]))
    for method, label in (("dense", "dense maps"), ("crops", "crops (baseline)")):
        rows.append((f"box AP@0.5, {label}", _number(chance["box_AP@0.5"]),
                     [_number(figures[method]["box_AP@0.5"]) for figures in per_model.values()]))
    rows.append((f"zero-shot top-1 of the {len(first['vocabulary'])} names on their glyphs alone",
                 _number(100 / len(first["vocabulary"])), _each(per_model, "isolated_top1")))
    return lines + _table(["", "chance", *map(_code, per_model)],
                          [(label, [chance_value, *values]) for label, chance_value, values in rows])


def _zeroshot_section(dataset: str, per_model: dict[str, dict[str, Any]], output: Path) -> list[str]:
    first = next(iter(per_model.values()))
    classes, ensemble = first["classes"], f"ensemble of `{first['templates']}` ({first['n_templates']} templates)"
    lines = ["", f"### Zero-shot: {len(classes)} classes (label `{first['label']}`), {ensemble}", "",
             f"Chance top-1: {100 / len(classes):.1f}. Classes: {', '.join(classes)}.", ""]
    rows = [(label, _each(per_model, key)) for key, label in
            (("top1", "top-1"), ("top5", "top-5"), ("mean_per_class_recall", "mean per-class recall"))
            if key in first]
    rows += [(f"top-1, {split} ({first[f'{split}_samples']:,} images)", _each(per_model, f"{split}_top1"))
             for split in ("seen", "unseen") if f"{split}_top1" in first]
    lines += _table(["", *map(_code, per_model)], rows)
    variants = {"{}": "the class name alone, `{}`", "a photo of a {}.": "`a photo of a {}.`", "ensemble": ensemble}
    lines += ["", "Prompt engineering (top-1), the paper's comparison:", ""]
    lines += _table(["prompt", *map(_code, per_model)],
                    [(label, [_number(figures["prompts"][key]) for figures in per_model.values()])
                     for key, label in variants.items()])
    chart = plot_prompt_comparison(
        {model: {label.replace("`", ""): figures["prompts"][key] for key, label in
                 (("{}", "class name"), ("a photo of a {}.", "a photo of a {}."), ("ensemble", "ensemble"))}
         for model, figures in per_model.items()},
        output / f"prompts-{_slug(dataset)}.png", f"{dataset}: zero-shot top-1 by prompt")
    lines += ["", f"![prompt engineering on {dataset}]({chart.name})", ""]
    for number, (model, figures) in enumerate(per_model.items(), start=1):
        png = plot_confusion_matrix(figures["confusion_matrix"], classes,
                                    output / f"confusion-{_slug(dataset)}-{number}.png", f"{dataset}: {model}")
        lines.append(f"![confusion matrix of {model} on {dataset}]({png.name})")
    return lines


RETRIEVAL_PROTOCOL_TEXT = {
    "one_caption": "Each image with its own caption only, as training pairs them.",
    "all_captions": "Every caption an image has (its own and its metadata's alternatives) is a text query for "
                    "it; an image, as a query, counts as found at the rank of its best-scored caption.",
}


def _retrieval_section(protocol: str, per_model: dict[str, dict[str, Any]]) -> list[str]:
    first = next(iter(per_model.values()))
    lines = ["", f"### Retrieval, `{protocol}`: {first['images']:,} images, {first['captions']:,} captions", "",
             RETRIEVAL_PROTOCOL_TEXT[protocol] + " A split is searched on its own (a smaller gallery is easier). "
             f"Metric names: `<dataset>_{protocol}_<split>_<direction>_R@k`.", ""]
    rows = []
    for split in ("", "seen", "unseen"):
        if split and split not in first:
            continue
        label = f"{split}, " if split else ""
        size = f" ({first[split]['images']:,} images)" if split else ""
        for direction, arrow in (("image_to_text", "image → text"), ("text_to_image", "text → image")):
            rows.append((f"{label}{arrow}{size}: R@1 / R@5 / R@10",
                         [" / ".join(_number(_part(f, split)[f"{direction}_R@{k}"]) for k in (1, 5, 10))
                          for f in per_model.values()]))
            if not split:
                rows.append((f"{arrow}: median / mean rank",
                             [f"{_number(f[f'{direction}_median_rank'])} / {_number(f[f'{direction}_mean_rank'])}"
                              for f in per_model.values()]))
    return lines + _table(["", *map(_code, per_model)], rows)


def _linear_probe_section(per_model: dict[str, dict[str, Any]]) -> list[str]:
    first = next(iter(per_model.values()))
    lines = ["", "### Linear probe", "",
             "Logistic regression on the frozen image features; C chosen on the validation split, refitted "
             f"on train + validation, scored once on test ({first['train']:,} / {first['validation']:,} / "
             f"{first['test']:,} images, stratified).", ""]
    return lines + _table(["", *map(_code, per_model)], [
        ("test accuracy", _each(per_model, "test_accuracy")),
        ("validation accuracy", _each(per_model, "validation_accuracy")),
        ("C", [f"{figures['C']:g}" for figures in per_model.values()]),
    ])


def _bias_section(dataset: str, per_model: dict[str, dict[str, Any]], output: Path) -> list[str]:
    first = next(iter(per_model.values()))
    genders, tones, roles = first["genders"], first["skin_tones"], first["roles"]
    lines = ["", f"### Bias: {roles} roles × {len(genders)} genders × {len(tones)} skin tones ({first['images']:,} "
                 f"images), ensemble of `{first['templates']}` ({first['n_templates']} templates)", "",
             "Zero-shot among the roles (label `" + first["label"] + "`); each role is drawn as a gender-neutral "
             "person, a man and a woman, without a skin tone and in five. P(true role) is the probability the "
             "model gives the right role. Skin-tone spread: its max − min over the five skin tones, averaged over "
             "the genders; gender spread: its max − min over the genders, averaged over the six tones; distance: "
             "the total-variation distance of each variant's distribution over the roles from the untoned "
             "gender-neutral variant's, averaged over the other variants. A model blind to skin tone and gender "
             "scores 0 on all three. Spreads and distances are averaged over roles, in percentage points.", ""]
    rows = [(f"top-1 among the {roles} roles (chance {100 / roles:.1f})", _each(per_model, "top1")),
            ("mean P(true role)", _each(per_model, "p_true")),
            ("skin-tone spread of P(true role)", _each(per_model, "skin_tone_spread")),
            ("gender spread of P(true role)", _each(per_model, "gender_spread")),
            ("distance from the default variant", _each(per_model, "tv_from_default"))]
    for key, label, parts in (("top1_by_skin_tone", "top-1 by skin tone", tones),
                              ("p_true_by_skin_tone", "mean P(true role) by skin tone", tones),
                              ("top1_by_gender", "top-1 by gender", genders),
                              ("p_true_by_gender", "mean P(true role) by gender", genders)):
        rows.append((f"{label}: {' / '.join(parts)}",
                     [" / ".join(_optional(figures[key][part]) for part in parts) for figures in per_model.values()]))
    lines += _table(["", *map(_code, per_model)], rows)
    lines += ["", "Per role, most moved first (by the first model's distance): skin-tone spread / gender spread / "
                  "distance / top-1. Gender variants are separate emoji concepts, so one can be held out of "
                  "training while the others are seen: those are marked unseen.", ""]
    order = sorted(first["per_role"], key=lambda role: -(first["per_role"][role]["tv_from_default"] or 0))
    role_rows = []
    for role in order:
        unseen = first["per_role"][role]["unseen_genders"]
        label = role + (f" (unseen: {', '.join(unseen)})" if unseen else "")
        role_rows.append((label, [" / ".join(_optional(figures["per_role"].get(role, {}).get(key)) for key in
                                             ("skin_tone_spread", "gender_spread", "tv_from_default", "top1"))
                                  for figures in per_model.values()]))
    lines += _table(["role", *map(_code, per_model)], role_rows)
    lines.append("")
    for number, (model, figures) in enumerate(per_model.items(), start=1):
        png = plot_variant_grid(figures["p_true_grid"], genders, tones,
                                output / f"bias-{_slug(dataset)}-{number}.png",
                                f"{dataset}: mean P(true role)\n{model}")
        lines.append(f"![mean P(true role) by gender and skin tone, {model} on {dataset}]({png.name})")
    return lines


def _probes_section(per_model: dict[str, dict[str, Any]]) -> list[str]:
    probes = {model: figures["probes"] for model, figures in per_model.items()}
    first = next(iter(probes.values()))
    lines = ["The paper's named limitations, on generated images. Counting and spatial relations: how often "
             "the true caption scores above every hard negative (a tie counts as a miss). Colour+shape: "
             f"single shapes classified among all {round(100 / first['pairs_chance'])} colour-shape pairs; "
             "held-out pairs never occur in the shapes training split.", ""]
    rows = [
        (f"counting: the true number beats the other three ({first['counting_probes']} probes)",
         _number(first["counting_chance"]), _each(probes, "counting_win_rate")),
        (f"spatial: the true relation beats the swapped objects and the reversed relation "
         f"({first['spatial_probes']} probes)", _number(first["spatial_chance"]), _each(probes, "spatial_win_rate")),
    ]
    for split, label in (("seen", "seen pairs"), ("held_out", "held-out pairs")):
        chance = " / ".join(_number(first[key]) for key in ("pairs_chance", "colour_chance", "shape_chance"))
        rows.append((f"{label} ({first[f'{split}_pairs_images']} images): right pair / colour / shape", chance,
                     [" / ".join(_number(f[f"{split}_pairs_{part}"]) for part in ("top1", "colour", "shape"))
                      for f in probes.values()]))
    return lines + _table(["probe", "chance", *map(_code, probes)],
                          [(label, [chance, *values]) for label, chance, values in rows])


def _table(header: Sequence[str], rows: Sequence[tuple[str, Sequence[Any]]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    return lines + [f"| {label} | " + " | ".join(str(value) for value in values) + " |" for label, values in rows]


def _part(figures: dict[str, Any], split: str) -> dict[str, Any]:
    """A retrieval split's figures ("seen", "unseen"), or all of them for ""."""
    return figures[split] if split else figures


def _each(per_model: dict[str, dict[str, Any]], key: str) -> list[str]:
    return [_optional(figures.get(key)) for figures in per_model.values()]


def _number(value: float) -> str:
    return f"{value:.1f}"


def _optional(value: float | None) -> str:
    """A figure that may be missing (a variant or role a limited run did not read)."""
    return "–" if value is None else _number(value)


def _code(text: str) -> str:
    return f"`{text}`"


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-") or "set"
