"""End-of-run artefacts: a PNG of the loss, evaluation and temperature curves, and a short
markdown report beside it. The plot needs matplotlib (the eval extra); without it training still
writes the report, which says how to get the plot."""

from __future__ import annotations

import math
from pathlib import Path
from types import ModuleType
from typing import Any

from ..core.extras import MissingExtraError, require
from .config import TrainConfig

HEADLINE_METRICS = ("openmoji_image_to_text_R@1", "openmoji_image_to_text_R@10", "openmoji_zeroshot_top1",
                    "fashion_mnist_zeroshot_top1")


def write_report(out: Path, config: TrainConfig, history: list[dict[str, Any]]) -> tuple[Path | None, Path]:
    """`(curves.png or None without matplotlib, report.md)` in `out`."""
    try:
        plot, figure = _plot_curves(out / "curves.png", history), "![curves](curves.png)"
    except MissingExtraError as error:
        plot, figure = None, f"No curves plot: {error}."
    evaluated = [record for record in history if any(key.endswith(("top1", "R@1")) for key in record)]
    final = evaluated[-1] if evaluated else {}
    lines = [f"# Training report: {out.name}", "",
             f"- steps: {config.steps}, batch {config.batch_size}, lr {config.lr}, loss {config.loss}, "
             f"precision {config.precision}, model {config.pretrained or config.model}",
             f"- final loss: {history[-1]['loss']:.4f}" if history else "- no steps run",
             f"- final temperature: {math.exp(-history[-1]['logit_scale']):.4f}" if history else "",
             "", figure, ""]
    if final:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {key} | {value:.2f} |" for key, value in final.items()
                  if key not in ("step", "epoch", "loss", "lr", "logit_scale", "samples_per_s")]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return plot, report


def _pyplot() -> ModuleType:
    matplotlib = require("matplotlib", "eval", "the curves plot")
    matplotlib.use("Agg")  # files only, no display; chosen before pyplot is imported
    return require("matplotlib.pyplot", "eval", "the curves plot")


def _plot_curves(path: Path, history: list[dict[str, Any]]) -> Path:
    plt = _pyplot()
    figure, (loss_axis, eval_axis, temperature_axis) = plt.subplots(1, 3, figsize=(15, 4))
    steps = [record["step"] for record in history]
    loss_axis.plot(steps, [record["loss"] for record in history], linewidth=0.8)
    loss_axis.set(title="training loss", xlabel="step")
    evaluated = [record for record in history if any(key in record for key in HEADLINE_METRICS)]
    for key in HEADLINE_METRICS:
        points = [(record["step"], record[key]) for record in evaluated if key in record]
        if points:
            eval_axis.plot(*zip(*points), marker="o", label=key)
    eval_axis.set(title="evaluation (%)", xlabel="step")
    if evaluated:
        eval_axis.legend(fontsize=7)
    temperature_axis.plot(steps, [math.exp(-record["logit_scale"]) for record in history])
    temperature_axis.set(title="temperature 1/exp(logit_scale)", xlabel="step")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
