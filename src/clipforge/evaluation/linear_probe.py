"""Linear probe: logistic regression on frozen image features, the paper's measure of how much a
representation holds beyond what its text tower can name. Features are standardised with the
training rows' statistics, so one grid of C suits every model's feature scale; C is chosen on a
validation split, then refitted on train + validation and scored once on test. Needs scikit-learn,
from the eval extra."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch

from ..core.extras import extra_imports

with extra_imports("eval", "the linear probe"):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0, 1000.0)


def stratified_split(labels: np.ndarray, seed: int = 0, validation: float = 0.2,
                     test: float = 0.2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, validation, test) index arrays with every class in the same proportions; a class
    with fewer than three samples goes to train only."""
    rng = np.random.default_rng(seed)
    parts: tuple[list[int], list[int], list[int]] = ([], [], [])
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        if len(members) < 3:
            parts[0].extend(members)
            continue
        n_test = max(1, round(test * len(members)))
        n_validation = max(1, round(validation * len(members)))
        parts[2].extend(members[:n_test])
        parts[1].extend(members[n_test:n_test + n_validation])
        parts[0].extend(members[n_test + n_validation:])
    return tuple(np.sort(np.asarray(part, dtype=np.int64)) for part in parts)


def linear_probe(features: torch.Tensor, labels: torch.Tensor, seed: int = 0,
                 c_grid: Sequence[float] = C_GRID, max_iter: int = 1000) -> dict[str, float | int | dict]:
    """Test accuracy (percent) of the probe whose C scored best on validation, with the grid's
    validation accuracies and the split sizes. features: [n, dim]; labels: [n] class indices."""
    x = features.detach().float().cpu().numpy()
    y = labels.cpu().numpy()
    train, validation, test = stratified_split(y, seed)
    if len(np.unique(y[train])) < 2 or not len(validation) or not len(test):
        raise ValueError("the linear probe needs at least two classes with three or more samples each")

    def fit(probe: Pipeline, rows: np.ndarray) -> Pipeline:
        # One thread: these fits are small, and on a busy machine OpenMP/BLAS thread pools spin-wait
        # on each other (measured: 20 s against 0.24 s for one fit on 2 shared cores).
        with warnings.catch_warnings(), threadpool_limits(limits=1):
            warnings.simplefilter("ignore", ConvergenceWarning)  # an unconverged fit is still a fair grid point
            return probe.fit(x[rows], y[rows])

    # the problem is convex: each C starts from the previous C's solution and reaches the same optimum sooner
    chain = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, warm_start=True))
    validation_accuracy = {}
    for c in sorted(c_grid):
        chain.set_params(logisticregression__C=c)
        validation_accuracy[c] = 100.0 * fit(chain, train).score(x[validation], y[validation])
    best = max(c_grid, key=lambda c: (validation_accuracy[c], -c))  # ties: the stronger regularization
    final = fit(make_pipeline(StandardScaler(), LogisticRegression(C=best, max_iter=max_iter)),
                np.concatenate([train, validation]))
    return {"test_accuracy": 100.0 * final.score(x[test], y[test]), "C": best,
            "validation_accuracy": validation_accuracy[best],
            "validation_accuracy_by_C": {str(c): accuracy for c, accuracy in validation_accuracy.items()},
            "train": len(train), "validation": len(validation), "test": len(test)}
