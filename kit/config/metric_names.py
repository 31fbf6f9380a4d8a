"""The competition metrics by their Kaggle names: what each scores and for which tasks.

The schema checks `competition.metric` against this table; kit/evaluation/metrics.py computes
each one (scikit-learn) under the same name, and a test keeps the two tables the same.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Literal

from kit.config.section import TASKS
from kit.errors import KitError

__all__ = ["METRIC_NAMES", "MetricName", "metric_name"]

_SINGLE = ("binary", "multiclass")


@dataclass(frozen=True)
class MetricName:
    """One competition metric: what it scores, which way is better, which tasks it applies to."""

    name: str
    needs: Literal["labels", "probs"]
    greater_is_better: bool
    tasks: tuple[str, ...]
    description: str


METRIC_NAMES: dict[str, MetricName] = {
    m.name: m
    for m in [
        MetricName("accuracy", "labels", True, TASKS, "share of rows exactly right"),
        MetricName("f1", "labels", True, ("binary",), "F1 of the positive class"),
        MetricName("f1_micro", "labels", True, TASKS, "F1 of all decisions pooled"),
        MetricName("f1_macro", "labels", True, TASKS, "mean of per-class F1"),
        MetricName("f1_weighted", "labels", True, TASKS, "support-weighted F1"),
        MetricName("mcc", "labels", True, _SINGLE, "Matthews correlation coefficient"),
        MetricName("qwk", "labels", True, _SINGLE, "quadratic weighted kappa (ordinal)"),
        MetricName("log_loss", "probs", False, TASKS, "cross-entropy of the probabilities"),
        MetricName("roc_auc", "probs", True, TASKS, "ROC AUC (one-vs-rest / per-label macro)"),
    ]
}


def metric_name(name: str) -> MetricName:
    """The metric called `name`; a typo raises KitError naming the closest names."""
    if name in METRIC_NAMES:
        return METRIC_NAMES[name]
    close = difflib.get_close_matches(str(name), METRIC_NAMES, n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise KitError(
        f"Unknown metric {name!r}.{hint} Set competition.metric to one of: "
        f"{', '.join(METRIC_NAMES)}."
    )
