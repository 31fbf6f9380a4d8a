"""Iterative stratification of multilabel rows into k folds (Sechidis, Tsoumakas, Vlahavas 2011).

Why not the `iterative-stratification` package: its wheel installs a top-level `tests` package
into site-packages, which shadows a project's own `tests` (ours imports `tests.conftest`). The
algorithm is short: take the label with the fewest rows still to place, and give each of its rows
to the fold that wants that label most (ties: the fold that wants the most rows, then at random).
"""

from __future__ import annotations

import numpy as np


def iterative_folds(y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold number (0..k-1) of each row of the multi-hot matrix `y` (n, L)."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y, dtype=bool)
    n = len(y)
    ratios = np.full(folds, 1.0 / folds)
    wanted_rows = ratios * n
    wanted_labels = np.outer(ratios, y.sum(axis=0))  # (k, L)
    fold_of = np.full(n, -1, dtype=int)
    left = np.ones(n, dtype=bool)
    order = rng.permutation(n)  # visiting rows in a seeded order breaks ties at random
    while left.any():
        counts = y[left].sum(axis=0)
        if counts.max() == 0:  # the rows left have no label: fill the folds by their demand
            for i in order[left[order]]:
                fold_of[i] = _pick(wanted_rows, wanted_rows, rng)
                wanted_rows[fold_of[i]] -= 1
            break
        label = int(np.argmin(np.where(counts > 0, counts, n + 1)))
        for i in order[(left & y[:, label])[order]]:
            k = _pick(wanted_labels[:, label], wanted_rows, rng)
            fold_of[i] = k
            left[i] = False
            wanted_labels[k] -= y[i]
            wanted_rows[k] -= 1
    return fold_of


def _pick(demand: np.ndarray, rows_demand: np.ndarray, rng: np.random.Generator) -> int:
    best = np.flatnonzero(demand == demand.max())
    if len(best) > 1:
        best = best[rows_demand[best] == rows_demand[best].max()]
    return int(rng.choice(best))
