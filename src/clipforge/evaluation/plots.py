"""The evaluation report's figures as PNG files: a confusion matrix per model and set, the
prompt-engineering comparison across models, and the bias probe's P(true role) by gender and skin
tone. Needs matplotlib, from the eval extra."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.atomic import write_atomically
from ..core.extras import extra_imports

with extra_imports("eval", "the evaluation report"):
    import matplotlib

    matplotlib.use("Agg")  # files only, no display; chosen before pyplot is imported
    import matplotlib.pyplot as plt


def plot_confusion_matrix(counts: Sequence[Sequence[int]], classnames: Sequence[str], path: str | os.PathLike,
                          title: str) -> Path:
    """Rows are true classes, normalised to percent of the row, so every class reads on one scale."""
    counts = np.asarray(counts, dtype=float)
    percent = 100.0 * counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = 2.5 + 0.45 * len(classnames)
    figure, axis = plt.subplots(figsize=(size + 1, size))
    shown = axis.imshow(percent, cmap="Blues", vmin=0, vmax=100)
    axis.set_xticks(range(len(classnames)), classnames, rotation=45, ha="right", fontsize=8)
    axis.set_yticks(range(len(classnames)), classnames, fontsize=8)
    axis.set(xlabel="predicted", ylabel="true", title=title)
    if len(classnames) <= 20:
        for row, column in np.ndindex(percent.shape):
            axis.text(column, row, f"{percent[row, column]:.0f}", ha="center", va="center", fontsize=7,
                      color="white" if percent[row, column] > 50 else "black")
    figure.colorbar(shown, ax=axis, label="% of the true class")
    return _save(figure, path)


def plot_prompt_comparison(top1: dict[str, dict[str, float]], path: str | os.PathLike, title: str) -> Path:
    """Grouped bars: `top1[model][prompt variant]` zero-shot top-1 (percent)."""
    models = list(top1)
    variants = list(next(iter(top1.values())))
    width = 0.8 / len(models)
    figure, axis = plt.subplots(figsize=(2 + 2.2 * len(variants), 3.5))
    for number, model in enumerate(models):
        positions = np.arange(len(variants)) + (number - (len(models) - 1) / 2) * width
        axis.bar(positions, [top1[model][variant] for variant in variants], width, label=model)
    axis.set_xticks(range(len(variants)), variants, fontsize=8)
    axis.set(ylabel="top-1 (%)", title=title)
    axis.legend(fontsize=7)
    return _save(figure, path)


def plot_variant_grid(grid: Sequence[Sequence[float | None]], genders: Sequence[str], tones: Sequence[str],
                      path: str | os.PathLike, title: str) -> Path:
    """A heat map of `grid[gender][tone]`, the mean P(true role) in percent (None: no such variant),
    on a scale from 0 to the largest value, so a row or column that differs stands out."""
    values = np.array([[np.nan if value is None else value for value in row] for row in grid], dtype=float)
    top = 1.0 if np.isnan(values).all() else max(float(np.nanmax(values)), 1e-6)
    figure, axis = plt.subplots(figsize=(1.2 + 0.9 * len(tones), 1.2 + 0.5 * len(genders)))
    shown = axis.imshow(values, cmap="Blues", vmin=0, vmax=top)
    axis.set_xticks(range(len(tones)), tones, rotation=30, ha="right", fontsize=8)
    axis.set_yticks(range(len(genders)), genders, fontsize=8)
    axis.set_xlabel("skin tone")
    axis.set_title(title, fontsize=9)
    for row, column in np.ndindex(values.shape):
        value = values[row, column]
        axis.text(column, row, "–" if np.isnan(value) else f"{value:.1f}", ha="center", va="center", fontsize=7,
                  color="white" if value > 0.6 * top else "black")
    figure.colorbar(shown, ax=axis, label="P(true role), %")
    return _save(figure, path)


def _save(figure: plt.Figure, path: str | os.PathLike) -> Path:
    figure.tight_layout()
    try:
        return write_atomically(path, lambda partial: figure.savefig(partial, format="png", dpi=100))
    finally:
        plt.close(figure)
