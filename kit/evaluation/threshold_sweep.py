"""Where to cut one binary column: the metric over a grid of thresholds, and the bootstrap check.

Positive when p_pos > threshold (so 0.5 is exactly the argmax rule). A tuned threshold is kept
only when its gain over 0.5 stands out of the bootstrap noise; otherwise the rule stays 0.5. The
per-class thresholds of a multilabel rule (kit.evaluation.thresholds) cut each column the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from kit.errors import KitError
from kit.evaluation.metrics import score_from_binary_counts

__all__ = [
    "DEFAULT_GRID",
    "BinaryChoice",
    "best_index",
    "binary_inputs",
    "choose_binary_threshold",
    "metric_curve",
    "sweep_binary",
    "threshold_grid",
]

DEFAULT_GRID = np.round(np.arange(1, 100) / 100, 2)  # 0.01 .. 0.99, contains 0.5 exactly
_RESAMPLES_PER_CHUNK = 25  # bounds memory at 25 x n_rows weights per chunk


def threshold_grid(grid: np.ndarray | None) -> np.ndarray:
    """The sorted threshold grid, always with 0.5 (the argmax rule everything is compared to)."""
    grid = DEFAULT_GRID if grid is None else np.asarray(grid, dtype=float)
    if grid.ndim != 1 or len(grid) == 0 or grid.min() < 0 or grid.max() > 1:
        raise KitError(f"grid must be a 1-D list of thresholds in [0, 1], got {grid!r}.")
    return np.unique(np.append(grid, 0.5))


def binary_inputs(y_true: np.ndarray, p_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """0/1 labels as booleans and the positive column as floats, or a KitError naming the fault."""
    y_true, p_pos = np.asarray(y_true), np.asarray(p_pos, dtype=float)
    if p_pos.ndim != 1 or y_true.shape != p_pos.shape:
        raise KitError(
            f"y_true {y_true.shape} and p_pos {p_pos.shape} must be 1-D and the same length; "
            "pass p_pos = probs[:, 1], the positive-class column."
        )
    if not np.isin(y_true, (0, 1)).all():
        raise KitError(f"Binary y_true must hold 0/1, found values {np.unique(y_true)[:5]}.")
    return y_true.astype(bool), p_pos


def _scores(
    y: np.ndarray, p: np.ndarray, grid: np.ndarray, metric: str, weights: np.ndarray
) -> np.ndarray:
    """Metric at every threshold for every row-weighting: (n_weightings, n_thresholds)."""
    decided = (p[:, None] > grid[None, :]).astype(float)  # (n, T)
    tp = weights @ (decided * y[:, None])
    fp = weights @ (decided * ~y[:, None])
    n_pos, n_neg = weights @ y, weights @ ~y
    return score_from_binary_counts(metric, tp, fp, n_pos[:, None] - tp, n_neg[:, None] - fp)


def best_index(scores: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Index of the best threshold per row of `scores`; ties go to the threshold nearest 0.5."""
    is_best = np.isclose(scores, scores.max(axis=-1, keepdims=True), rtol=0, atol=1e-12)
    distance = np.where(is_best, np.abs(grid - 0.5), np.inf)
    return distance.argmin(axis=-1)


def metric_curve(y: np.ndarray, p: np.ndarray, grid: np.ndarray, metric: str) -> np.ndarray:
    """Metric at every threshold of `grid` on all rows, equally weighted."""
    return _scores(y, p, grid, metric, np.ones((1, len(y))))[0]


def sweep_binary(
    y_true: np.ndarray, p_pos: np.ndarray, metric: str, grid: np.ndarray | None = None
) -> pd.DataFrame:
    """The metric at each threshold of `grid` (default 0.01..0.99): columns threshold, score."""
    y, p = binary_inputs(y_true, p_pos)
    grid = threshold_grid(grid)
    return pd.DataFrame({"threshold": grid, "score": metric_curve(y, p, grid, metric)})


@dataclass
class BinaryChoice:
    """The chosen binary threshold with the evidence behind it (shown by 03_thresholds)."""

    metric: str
    threshold: float  # the decision: `robust_threshold`, or 0.5 when the gain is noise
    fell_back: bool  # True when the held-out gain over 0.5 is within bootstrap noise
    reason: str  # one sentence for the notebook
    best_threshold: float  # raw peak of the validation sweep
    robust_threshold: float  # median of the per-resample best thresholds
    interval: tuple[float, float]  # 95% bootstrap interval of the best threshold
    gain_interval: tuple[float, float]  # `confidence` interval of held-out gain over 0.5
    score_at_half: float
    score_at_best: float
    score_at_threshold: float
    sweep: pd.DataFrame  # threshold, score, score_low, score_high (95% bootstrap band)
    fold_thresholds: dict[int, float] | None = None  # best threshold within each fold


def _bootstrap_weights(n: int, n_resamples: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Chunks of resampling weights: how often each row was drawn, (chunk, n)."""
    for start in range(0, n_resamples, _RESAMPLES_PER_CHUNK):
        b = min(_RESAMPLES_PER_CHUNK, n_resamples - start)
        draws = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
        yield np.bincount(draws.ravel(), minlength=b * n).reshape(b, n).astype(float)


def choose_binary_threshold(
    y_true: np.ndarray,
    p_pos: np.ndarray,
    metric: str,
    n_bootstrap: int = 200,
    seed: int = 0,
    grid: np.ndarray | None = None,
    folds: np.ndarray | None = None,
    confidence: float = 0.8,
) -> BinaryChoice:
    """Tune the binary threshold for `metric`, keeping it only if it beats 0.5 beyond noise.

    Each bootstrap resample picks its own best threshold on the rows it drew and scores that
    pick against 0.5 on the rows it did not draw: those out-of-bag gains are what tuning is worth
    on fresh data, selection optimism included (an in-sample paired difference at the peak is
    biased upward and keeps thresholds tuned on pure noise). The robust threshold is the median
    pick, which steadies a ragged curve. If the `confidence` interval of the held-out gain
    reaches 0, the validation set cannot tell the two apart and the rule stays at 0.5.
    Small validation sets therefore keep 0.5 unless the gain is large; lower `confidence` to
    accept more.
    """
    y, p = binary_inputs(y_true, p_pos)
    grid = threshold_grid(grid)
    if n_bootstrap < 20:
        raise KitError(f"n_bootstrap={n_bootstrap} is too few for an interval; use >= 20 (200).")
    if not 0 < confidence < 1:
        raise KitError(f"confidence={confidence!r} must lie strictly between 0 and 1 (e.g. 0.8).")
    half = int(np.flatnonzero(grid == 0.5)[0])
    full = metric_curve(y, p, grid, metric)
    best = int(best_index(full, grid))

    rng = np.random.default_rng(seed)
    in_bag, picks, gains = [], [], []
    for weights in _bootstrap_weights(len(y), n_bootstrap, rng):
        s_in = _scores(y, p, grid, metric, weights)
        s_out = _scores(y, p, grid, metric, (weights == 0).astype(float))
        pick = best_index(s_in, grid)
        rows = np.arange(len(pick))
        in_bag.append(s_in)
        picks.append(grid[pick])
        gains.append(s_out[rows, pick] - s_out[rows, half])
    in_bag_scores, picks, gains = np.vstack(in_bag), np.concatenate(picks), np.concatenate(gains)

    robust = int(np.abs(grid - np.median(picks)).argmin())  # snap the median onto the grid
    tail = 100 * (1 - confidence) / 2
    gain_low, gain_high = np.percentile(gains, [tail, 100 - tail])
    fell_back = bool(gain_low <= 0)
    chosen = half if fell_back else robust
    gain_text = (
        f"held-out {metric} gain of tuning over 0.5 is [{gain_low:+.4f}, {gain_high:+.4f}] "
        f"({confidence:.0%} bootstrap interval)"
    )
    if fell_back:
        reason = f"kept 0.5 instead of {grid[robust]:.2f}: {gain_text}, which includes 0 (noise)"
    else:
        reason = f"tuned to {grid[robust]:.2f}: {gain_text}, clear of 0"

    band = np.percentile(in_bag_scores, [2.5, 97.5], axis=0)
    sweep = pd.DataFrame(
        {"threshold": grid, "score": full, "score_low": band[0], "score_high": band[1]}
    )
    fold_thresholds = None
    if folds is not None:
        folds = np.asarray(folds)
        if folds.shape != y.shape:
            raise KitError(f"folds has shape {folds.shape}; give one fold id per row {y.shape}.")
        fold_thresholds = {
            int(f): float(
                grid[best_index(metric_curve(y[folds == f], p[folds == f], grid, metric), grid)]
            )
            for f in np.unique(folds)
        }
    low, high = np.percentile(picks, [2.5, 97.5], method="nearest")  # stays on the grid
    return BinaryChoice(
        metric=metric,
        threshold=float(grid[chosen]),
        fell_back=fell_back,
        reason=reason,
        best_threshold=float(grid[best]),
        robust_threshold=float(grid[robust]),
        interval=(float(low), float(high)),
        gain_interval=(float(gain_low), float(gain_high)),
        score_at_half=float(full[half]),
        score_at_best=float(full[best]),
        score_at_threshold=float(full[chosen]),
        sweep=sweep,
        fold_thresholds=fold_thresholds,
    )
