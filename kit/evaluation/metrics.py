"""Metrics by their Kaggle names, computed with scikit-learn, plus the report saved as metrics.json.

Conventions (shared by the whole kit): `probs` is a float array (n, K); binary has K=2 columns
[negative, positive]; multiclass rows are softmax distributions; multilabel has K independent
sigmoid columns. `y_true` holds ints 0..K-1 (binary, multiclass) or a multi-hot (n, K) int array
(multilabel). `pred` holds decided labels in the same form as `y_true`. F1 and accuracy of
class ids are computed from their counts (the same numbers, without scikit-learn's per-call
checks: `_class_counts`).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning

from kit.config.metric_names import METRIC_NAMES, metric_name
from kit.config.params import TASKS
from kit.errors import KitError

__all__ = [
    "METRICS",
    "Metric",
    "default_predictions",
    "get_metric",
    "report",
    "score",
    "score_from_binary_counts",
]


@dataclass(frozen=True)
class Metric:
    """One competition metric: what it scores, which way is better, which tasks it applies to."""

    name: str
    needs: Literal["labels", "probs"]
    greater_is_better: bool
    tasks: tuple[str, ...]
    description: str
    # (y_true, labels-or-probs, task) -> float
    fn: Callable[[np.ndarray, np.ndarray, str], float]


def _class_ids(y: np.ndarray, pred: np.ndarray) -> bool:
    """Whether both are the same non-empty 1-D arrays of class ids (0, 1, 2...)."""
    return (y.ndim == 1 and pred.shape == y.shape and len(y) > 0
            and np.issubdtype(y.dtype, np.integer) and np.issubdtype(pred.dtype, np.integer)
            and min(y.min(), pred.min()) >= 0)


def _class_counts(y: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per class id of `_class_ids` arrays: true positives, true count, predicted count, and
    which ids occur in either.

    Why F1 and accuracy on class ids are computed here: scikit-learn validates its inputs on
    every call (~8 ms, whatever the size), and the decision rule's searches score ~1,000
    candidate decisions per fit, times the guard's folds: 03 spent 8 s of its 9 on validation
    for 68 rows. Same formulas as f1_score (zero_division=0, over the labels present in y or
    pred), checked equal to it in tests/test_metrics.py; other inputs go to scikit-learn.
    """
    width = int(max(y.max(), pred.max())) + 1
    true = np.bincount(y, minlength=width)
    predicted = np.bincount(pred, minlength=width)
    tp = np.bincount(y[y == pred], minlength=width)
    return tp, true, predicted, (true + predicted) > 0


def _f1(average: str) -> Callable[[np.ndarray, np.ndarray, str], float]:
    def fn(y: np.ndarray, pred: np.ndarray, task: str) -> float:
        if not _class_ids(y, pred) or (average == "binary" and max(y.max(), pred.max()) > 1):
            return float(skm.f1_score(y, pred, average=average, zero_division=0))
        tp, true, predicted, present = _class_counts(y, pred)
        if average == "binary":  # the positive class, 1 (0 when neither side has it)
            return float(2 * tp[1] / (true[1] + predicted[1])) if present[1:2].any() else 0.0
        if average == "micro":  # one label per row: the share of rows right
            return float(tp.sum() / true.sum())
        f1 = 2 * tp[present] / (true[present] + predicted[present])
        return float(np.average(f1, weights=true[present] if average == "weighted" else None))

    return fn


def _log_loss(y: np.ndarray, probs: np.ndarray, task: str) -> float:
    if task == "multilabel":
        # Kaggle's multilabel log loss is the mean of the per-column binary log losses.
        return float(
            np.mean(
                [skm.log_loss(y[:, k], probs[:, k], labels=[0, 1]) for k in range(probs.shape[1])]
            )
        )
    # A float32 softmax, cast to float64 (every saved fit), sums to 1 within 1e-7, not within
    # the sqrt(float64 eps) scikit-learn >= 1.5 checks: it warned "y_prob values do not sum to
    # one" in every 02/03 notebook. Rows off by rounding only are renormalised; anything further
    # off is left for scikit-learn to warn about (a model that returns no probabilities).
    total = probs.sum(axis=1, keepdims=True)
    if np.allclose(total, 1.0, rtol=0, atol=1e-4):
        probs = probs / total
    return float(skm.log_loss(y, probs, labels=list(range(probs.shape[1]))))


def _roc_auc(y: np.ndarray, probs: np.ndarray, task: str) -> float:
    if task == "binary":
        return float(skm.roc_auc_score(y, probs[:, 1]))
    if task == "multiclass":
        return float(
            skm.roc_auc_score(
                y, probs, multi_class="ovr", average="macro", labels=list(range(probs.shape[1]))
            )
        )
    return float(skm.roc_auc_score(y, probs, average="macro"))


def _accuracy(y: np.ndarray, pred: np.ndarray, task: str) -> float:
    if _class_ids(y, pred):  # scikit-learn's checks cost more than this (_class_counts)
        return float(np.mean(y == pred))
    return float(skm.accuracy_score(y, pred))  # multilabel: subset accuracy


def _mcc(y: np.ndarray, pred: np.ndarray, task: str) -> float:
    return float(skm.matthews_corrcoef(y, pred))


def _qwk(y: np.ndarray, pred: np.ndarray, task: str) -> float:
    return float(skm.cohen_kappa_score(y, pred, weights="quadratic"))


_FUNCTIONS: dict[str, Callable[[np.ndarray, np.ndarray, str], float]] = {
    "accuracy": _accuracy,
    "f1": _f1("binary"),
    "f1_micro": _f1("micro"),
    "f1_macro": _f1("macro"),
    "f1_weighted": _f1("weighted"),
    "mcc": _mcc,
    "qwk": _qwk,
    "log_loss": _log_loss,
    "roc_auc": _roc_auc,
}

# The table of names (kit.config.metric_names, what the schema checks) with a function for each.
METRICS: dict[str, Metric] = {
    name: Metric(m.name, m.needs, m.greater_is_better, m.tasks, m.description, _FUNCTIONS[name])
    for name, m in METRIC_NAMES.items()
}


def get_metric(name: str) -> Metric:
    """The registered metric called `name`; a typo raises KitError naming the closest names."""
    return METRICS[metric_name(name).name]


def _check(y_true: np.ndarray, probs: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray]:
    """Arrays in the kit's conventions, or a KitError saying which one is off and how."""
    if task not in TASKS:
        raise KitError(f"Unknown task {task!r}: use one of {', '.join(TASKS)}.")
    probs = np.asarray(probs, dtype=float)
    y_true = np.asarray(y_true)
    if probs.ndim != 2 or (task == "binary" and probs.shape[1] != 2):
        raise KitError(
            f"probs has shape {probs.shape}; a {task} task needs a 2-D array (n_rows, n_classes)"
            + (" with 2 columns [negative, positive]." if task == "binary" else ".")
        )
    want = probs.shape if task == "multilabel" else probs.shape[:1]
    if y_true.shape != want:
        raise KitError(
            f"y_true has shape {y_true.shape} but probs has shape {probs.shape}; a {task} task "
            f"needs y_true of shape {want}"
            + (" (multi-hot 0/1)." if task == "multilabel" else " (class ids 0..K-1).")
        )
    return y_true, probs


def default_predictions(probs: np.ndarray, task: str) -> np.ndarray:
    """The untuned decision: argmax (binary, multiclass) or each column above 0.5 (multilabel)."""
    probs = np.asarray(probs, dtype=float)
    if task == "multilabel":
        return (probs > 0.5).astype(int)
    return probs.argmax(axis=1)


def score(
    name: str,
    y_true: np.ndarray,
    probs: np.ndarray,
    pred: np.ndarray | None = None,
    task: str = "multiclass",
) -> float:
    """The metric `name` on one set of predictions; `pred` defaults to `default_predictions`."""
    metric = get_metric(name)
    y_true, probs = _check(y_true, probs, task)
    if task not in metric.tasks:
        others = [m for m, v in METRICS.items() if task in v.tasks]
        raise KitError(
            f"Metric {name!r} is not defined for a {task} task ({metric.description}); "
            f"use one of: {', '.join(others)}."
        )
    if metric.needs == "probs":
        with warnings.catch_warnings():
            # scikit-learn warns and returns NaN (or raises) when a class has a single outcome
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            try:
                value, detail = metric.fn(y_true, probs, task), ""
            except ValueError as err:
                value, detail = float("nan"), f" ({err})"
        if np.isnan(value):
            raise KitError(
                f"Cannot compute {name} on these rows{detail}. Usually a class has no positive "
                "or no negative row: use a larger or stratified validation split so every class "
                "appears with both outcomes."
            )
        return value
    if pred is None:
        pred = default_predictions(probs, task)
    pred = np.asarray(pred)
    if pred.shape != y_true.shape:
        raise KitError(f"pred has shape {pred.shape}; it must match y_true's {y_true.shape}.")
    return metric.fn(y_true, pred, task)


def report(
    y_true: np.ndarray, probs: np.ndarray, pred: np.ndarray | None, task: str, metric_name: str
) -> dict[str, float]:
    """What goes into metrics.json: the competition metric first, then the usual companions.

    Companions: accuracy and F1 micro/macro/weighted on `pred`, plus log_loss and roc_auc when
    they can be computed on these rows (roc_auc needs both outcomes for every class).
    """
    out = {metric_name: score(metric_name, y_true, probs, pred, task)}
    for name in ("accuracy", "f1_micro", "f1_macro", "f1_weighted"):
        out.setdefault(name, score(name, y_true, probs, pred, task))
    for name in ("log_loss", "roc_auc"):
        if name not in out:
            # not computable on these rows (e.g. a class never seen): left out rather than NaN
            with contextlib.suppress(KitError):
                out[name] = score(name, y_true, probs, pred, task)
    return out


def score_from_binary_counts(
    name: str, tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, tn: np.ndarray
) -> np.ndarray:
    """A label metric of a binary decision from its confusion counts, for many decisions at once.

    The threshold sweep and its bootstrap score ~20,000 (threshold, resample) pairs; one
    scikit-learn call each takes tens of seconds, these closed forms take milliseconds. The
    formulas are checked against scikit-learn in tests/test_metrics.py. Counts may be weighted.
    """
    metric = get_metric(name)
    if metric.needs != "labels" or "binary" not in metric.tasks:
        raise KitError(
            f"Metric {name!r} does not depend on a threshold; a threshold can only be tuned for "
            "a label metric: accuracy, f1, f1_micro, f1_macro, f1_weighted, mcc or qwk."
        )
    tp, fp, fn, tn = (np.asarray(a, dtype=float) for a in (tp, fp, fn, tn))
    n = tp + fp + fn + tn
    pos, neg = tp + fn, fp + tn

    def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
        # scikit-learn's zero_division=0 convention: 0/0 counts as 0
        return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)

    f1_pos = ratio(2 * tp, 2 * tp + fp + fn)
    f1_neg = ratio(2 * tn, 2 * tn + fn + fp)
    if name in ("accuracy", "f1_micro"):  # micro-F1 of a single-label task is accuracy
        return ratio(tp + tn, n)
    if name == "f1":
        return f1_pos
    if name == "f1_macro":
        return (f1_pos + f1_neg) / 2
    if name == "f1_weighted":
        return ratio(pos * f1_pos + neg * f1_neg, n)
    if name == "mcc":
        return ratio(tp * tn - fp * fn, np.sqrt((tp + fp) * pos * (tn + fn) * neg))
    # qwk: with two classes the quadratic weights equal the unweighted ones, so this is kappa
    observed = ratio(tp + tn, n)
    expected = ratio((tp + fp) * pos + (tn + fn) * neg, n * n)
    return ratio(observed - expected, 1 - expected)
