"""Blend weights: greedy hill climbing (Caruana et al. 2004) or scipy's Nelder-Mead/Powell.

Weights are non-negative and sum to 1. Hill climbing starts from the best single member and adds
one member at a time, with replacement, whenever that raises the competition metric; its result
is never worse than the best member on the rows it is fitted on. The scipy methods minimise a
smooth surrogate of the metric (log loss of the blend) over softmax-parametrised weights, since a
thresholded metric is a step function on which a simplex search stalls; `fit_weights` keeps the
best of {best member, the chosen method} on the metric itself, so no blend loses to its best
member on the fitting rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.stats import rankdata

Score = Callable[[np.ndarray], float]  # probabilities (n, K) -> the metric, higher is better


@dataclass
class Blend:
    """Fitted weights (one per member, summing to 1) and the blend's score on the fitting rows."""

    weights: np.ndarray
    score: float
    method: str


def to_ranks(probs: np.ndarray) -> np.ndarray:
    """Each class column replaced by its rank in [0, 1] (rank averaging blends these)."""
    ranks = np.column_stack([rankdata(col) for col in probs.T]) / len(probs)
    return ranks


def combine(stack: np.ndarray, weights: np.ndarray, normalize_rows: bool) -> np.ndarray:
    """Weighted mean of members' probabilities: stack (m, n, K), weights (m,) -> (n, K)."""
    blend = np.tensordot(weights, stack, axes=1)
    if normalize_rows:  # single-label: rows stay distributions (rank blends need it)
        blend = blend / np.clip(blend.sum(axis=1, keepdims=True), 1e-12, None)
    return blend


def hill_climb(stack: np.ndarray, score: Score, iterations: int, normalize_rows: bool,
               patience: int = 20) -> Blend:
    """Greedy forward selection with replacement, from the best single member."""
    m = len(stack)
    singles = [score(stack[i]) for i in range(m)]
    counts = np.zeros(m)
    counts[int(np.argmax(singles))] = 1
    best_counts, best = counts.copy(), max(singles)
    since_best = 0
    for _ in range(iterations):
        trials = []
        for i in range(m):
            c = counts.copy()
            c[i] += 1
            trials.append(score(combine(stack, c / c.sum(), normalize_rows)))
        pick = int(np.argmax(trials))
        counts[pick] += 1
        if trials[pick] > best + 1e-12:
            best, best_counts, since_best = trials[pick], counts.copy(), 0
        else:
            since_best += 1
            if since_best >= patience:
                break
    return Blend(best_counts / best_counts.sum(), float(best), "hill_climb")


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def scipy_blend(stack: np.ndarray, surrogate: Callable[[np.ndarray], float], score: Score,
                method: str, normalize_rows: bool) -> Blend:
    """Weights minimising `surrogate` (a smooth loss of the blend) with scipy's `method`."""
    m = len(stack)

    def loss(z: np.ndarray) -> float:
        return surrogate(combine(stack, softmax(z), normalize_rows))

    res = minimize(loss, np.zeros(m), method="Nelder-Mead" if method == "nelder_mead" else
                   "Powell", options={"maxiter": 200 * m, "xatol": 1e-4, "fatol": 1e-7}
                   if method == "nelder_mead" else {"maxiter": 50 * m, "xtol": 1e-4})
    weights = softmax(res.x)
    return Blend(weights, float(score(combine(stack, weights, normalize_rows))), method)


def fit_weights(stack: np.ndarray, score: Score, surrogate: Callable[[np.ndarray], float],
                method: str, iterations: int, normalize_rows: bool) -> Blend:
    """The chosen method's blend, or the best single member if that scores higher."""
    m = len(stack)
    singles = np.array([score(stack[i]) for i in range(m)])
    best_single = Blend(np.eye(m)[int(np.argmax(singles))], float(singles.max()), "best_member")
    if m == 1:
        return best_single
    if method == "hill_climb":
        blend = hill_climb(stack, score, iterations, normalize_rows)
    else:
        blend = scipy_blend(stack, surrogate, score, method, normalize_rows)
    return blend if blend.score >= best_single.score else best_single
