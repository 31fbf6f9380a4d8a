"""Temperature scaling and calibration measures (ECE, reliability curve) for probabilities.

The kit stores probabilities, not logits, so every function here takes probabilities by default and
recovers logits by a clipped log (softmax tasks) or logit (multilabel). Temperature T > 1 softens
over-confident predictions; it never changes a softmax argmax.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_softmax, softmax
from sklearn.calibration import calibration_curve

from kit.config.params import TASKS
from kit.errors import KitError

__all__ = [
    "apply_temperature",
    "expected_calibration_error",
    "fit_temperature",
    "reliability_curve",
]

# Keeps log/logit finite on probabilities that saturated at 0 or 1 (float32 softmax does).
_EPS = 1e-12
# Search range for T; far beyond what a sane model needs, bounded so the optimiser cannot run off.
_LOG_T_BOUNDS = (np.log(0.05), np.log(20.0))


def _to_logits(scores: np.ndarray, task: str, from_logits: bool) -> np.ndarray:
    if task not in TASKS:
        raise KitError(f"Unknown task {task!r}: use one of {', '.join(TASKS)}.")
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 2:
        raise KitError(f"Expected a 2-D array (n_rows, n_classes), got shape {scores.shape}.")
    if from_logits:
        return scores
    if scores.min() < 0 or scores.max() > 1:
        raise KitError(
            f"Probabilities must lie in [0, 1] (found {scores.min():.3g}..{scores.max():.3g}); "
            "pass from_logits=True if these are logits."
        )
    p = np.clip(scores, _EPS, 1 - _EPS)
    # Softmax logits are defined up to a per-row constant, so log p serves as logits.
    return np.log(p) - np.log1p(-p) if task == "multilabel" else np.log(p)


def _nll(logits: np.ndarray, y_true: np.ndarray, task: str) -> float:
    if task == "multilabel":
        # mean binary cross-entropy, written with logaddexp to stay finite for large logits
        return float(np.mean(np.logaddexp(0.0, logits) - y_true * logits))
    return float(-np.mean(log_softmax(logits, axis=1)[np.arange(len(y_true)), y_true]))


def fit_temperature(
    logits_or_probs: np.ndarray, y_true: np.ndarray, task: str, from_logits: bool = False
) -> float:
    """The temperature T minimising validation NLL of softmax(z / T) (or sigmoid, multilabel).

    Multilabel fits one T shared by all columns. Optimised over log T so T stays positive.
    """
    logits = _to_logits(logits_or_probs, task, from_logits)
    y_true = np.asarray(y_true).astype(int)
    if len(y_true) != len(logits):
        raise KitError(
            f"y_true has {len(y_true)} rows but the probabilities have {len(logits)}; fit the "
            "temperature on the validation rows and their labels."
        )
    result = minimize_scalar(
        lambda log_t: _nll(logits / np.exp(log_t), y_true, task),
        bounds=_LOG_T_BOUNDS,
        method="bounded",
        options={"xatol": 1e-5},
    )
    return float(np.exp(result.x))


def apply_temperature(
    logits_or_probs: np.ndarray, temperature: float, task: str, from_logits: bool = False
) -> np.ndarray:
    """Probabilities after dividing the logits by `temperature`."""
    if not temperature > 0:
        raise KitError(f"temperature must be > 0, got {temperature!r}; fit it with fit_temperature")
    logits = _to_logits(logits_or_probs, task, from_logits) / temperature
    return expit(logits) if task == "multilabel" else softmax(logits, axis=1)


def _outcomes_and_confidence(
    y_true: np.ndarray, probs: np.ndarray, task: str
) -> tuple[np.ndarray, np.ndarray]:
    """(0/1 outcome, predicted probability of that outcome) pairs that calibration is judged on.

    binary: positive-class probability vs y; multiclass: top-label confidence vs correctness;
    multilabel: every (row, class) probability vs its 0/1 label.
    """
    if task not in TASKS:
        raise KitError(f"Unknown task {task!r}: use one of {', '.join(TASKS)}.")
    probs = np.asarray(probs, dtype=float)
    y_true = np.asarray(y_true).astype(int)
    if task == "binary":
        return y_true, probs[:, 1]
    if task == "multiclass":
        return (probs.argmax(axis=1) == y_true).astype(int), probs.max(axis=1)
    return y_true.ravel(), probs.ravel()


def reliability_curve(
    y_true: np.ndarray, probs: np.ndarray, task: str, n_bins: int = 15
) -> pd.DataFrame:
    """Per non-empty bin of equal width: mean predicted probability, observed frequency, count."""
    outcome, conf = _outcomes_and_confidence(y_true, probs, task)
    observed, predicted = calibration_curve(
        outcome, conf, n_bins=n_bins, strategy="uniform", pos_label=1
    )
    # calibration_curve does not return bin sizes; recount with its own binning rule.
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    counts = np.bincount(np.searchsorted(edges[1:-1], conf), minlength=n_bins)
    return pd.DataFrame({"predicted": predicted, "observed": observed, "count": counts[counts > 0]})


def expected_calibration_error(
    y_true: np.ndarray, probs: np.ndarray, task: str, n_bins: int = 15
) -> float:
    """Count-weighted mean |observed − predicted| over the reliability curve's bins."""
    curve = reliability_curve(y_true, probs, task, n_bins)
    gaps = np.abs(curve["observed"] - curve["predicted"])
    return float(np.sum(gaps * curve["count"]) / curve["count"].sum())
