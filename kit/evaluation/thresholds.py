"""The decision rule: how validation probabilities become labels (thresholds, per-class, bias).

03_thresholds fits a `DecisionRule` on validation probabilities and saves it as JSON in the run
folder; 04_submit loads it and applies it to test probabilities. The rule carries the calibration
temperature too, so `apply` takes the model's raw probabilities.

Binary: positive when p_pos > threshold (found by kit.evaluation.threshold_sweep). A tuned one is
kept only when its gain over 0.5 stands out of the bootstrap noise; otherwise the rule stays 0.5.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from kit.config.params import TASKS, Task
from kit.core.atomic import write_json
from kit.errors import KitError
from kit.evaluation.calibration import apply_temperature
from kit.evaluation.metrics import default_predictions, get_metric, score
from kit.evaluation.ordinal import apply_cuts
from kit.evaluation.threshold_sweep import (
    DEFAULT_GRID,
    BinaryChoice,
    best_index,
    binary_inputs,
    choose_binary_threshold,
    metric_curve,
    sweep_binary,
    threshold_grid,
)

__all__ = [
    "DEFAULT_GRID",
    "BinaryChoice",
    "DecisionRule",
    "apply_class_bias",
    "apply_per_class_thresholds",
    "choose_binary_threshold",
    "choose_per_class_thresholds",
    "fit_class_bias",
    "sweep_binary",
]

# --- multilabel -------------------------------------------------------------------------------


def choose_per_class_thresholds(
    y_true: np.ndarray,
    probs: np.ndarray,
    metric: str = "f1",
    grid: np.ndarray | None = None,
    prior_positives: float = 20.0,
    labels: list[str] | None = None,
) -> pd.DataFrame:
    """One threshold per multilabel column, each tuned on that column's binary `metric`.

    `metric` scores one column as a binary problem: "f1" (default) is the per-class F1 that
    multilabel micro/macro F1 are built from; "mcc" or "accuracy" also work.

    A column with few positives has a ragged curve whose peak is mostly noise, so its threshold
    is shrunk toward 0.5: t = 0.5 + w (t_best - 0.5), w = positives / (positives + prior_positives).
    Returns one row per class: class, positives, best_threshold, threshold, score_at_half,
    score_at_threshold (the validation scores). The thresholds are `table["threshold"]`.
    """
    y_true, probs = np.asarray(y_true), np.asarray(probs, dtype=float)
    if probs.ndim != 2 or y_true.shape != probs.shape:
        raise KitError(
            f"Multilabel y_true {y_true.shape} and probs {probs.shape} must be the same (n, K) "
            "shape, y_true multi-hot 0/1."
        )
    if metric in ("f1_micro", "f1_macro", "f1_weighted"):
        raise KitError(
            f"metric={metric!r} would average both outcomes of each column; tune each column "
            "on 'f1' (its positive-class F1), which is what multilabel micro/macro F1 combine."
        )
    labels = labels or [str(k) for k in range(probs.shape[1])]
    if len(labels) != probs.shape[1]:
        raise KitError(f"{len(labels)} labels for {probs.shape[1]} probability columns.")
    grid = threshold_grid(grid)
    rows = []
    for k, label in enumerate(labels):
        y, p = binary_inputs(y_true[:, k], probs[:, k])
        best = float(grid[best_index(metric_curve(y, p, grid, metric), grid)])
        positives = int(y.sum())
        weight = positives / (positives + prior_positives)
        threshold = 0.5 + weight * (best - 0.5)  # may fall between grid points: score it alone
        at_half, at_threshold = metric_curve(y, p, np.array([0.5, threshold]), metric)
        rows.append(
            {
                "class": label,
                "positives": positives,
                "best_threshold": best,
                "threshold": float(threshold),
                "score_at_half": float(at_half),
                "score_at_threshold": float(at_threshold),
            }
        )
    return pd.DataFrame(rows)


def apply_per_class_thresholds(
    probs: np.ndarray, thresholds: np.ndarray, require_label: bool = True
) -> np.ndarray:
    """Multi-hot labels: column k is on when p_k > thresholds[k].

    require_label: a row with no column above its threshold gets its most likely label, for
    competitions where every row has at least one label.
    """
    probs = np.asarray(probs, dtype=float)
    thresholds = np.asarray(thresholds, dtype=float)
    if thresholds.shape != probs.shape[1:]:
        raise KitError(
            f"{len(thresholds)} thresholds for {probs.shape[1]} columns; fit one per class."
        )
    pred = (probs > thresholds).astype(int)
    if require_label:
        empty = pred.sum(axis=1) == 0
        pred[empty, probs[empty].argmax(axis=1)] = 1
    return pred


# --- multiclass -------------------------------------------------------------------------------


def apply_class_bias(probs: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Class ids argmax(log p + bias): a per-class shift of the decision boundaries."""
    log_p = np.log(np.clip(np.asarray(probs, dtype=float), 1e-12, 1.0))
    return (log_p + np.asarray(bias, dtype=float)).argmax(axis=1)


def fit_class_bias(
    y_true: np.ndarray,
    probs: np.ndarray,
    metric: str = "f1_macro",
    grid: np.ndarray | None = None,
    n_rounds: int = 3,
) -> np.ndarray:
    """Additive log-probability offsets per class that maximise `metric` (coordinate ascent).

    The metric is a step function of the offsets, so gradient optimisers (scipy) stall on it;
    coordinate ascent over a grid of offsets, one class at a time, is the standard remedy. A
    move is taken only when it strictly improves the score, so classes that need no shift keep 0.
    """
    y_true, probs = np.asarray(y_true), np.asarray(probs, dtype=float)
    if get_metric(metric).needs != "labels":
        raise KitError(f"A bias changes labels only; {metric!r} scores probabilities.")
    steps = np.linspace(-3, 3, 61) if grid is None else np.asarray(grid, dtype=float)
    n_classes = probs.shape[1]
    bias = np.zeros(n_classes)

    def value(b: np.ndarray) -> float:
        return score(metric, y_true, probs, apply_class_bias(probs, b), task="multiclass")

    current = value(bias)
    for _ in range(n_rounds):
        improved = False
        for k in range(n_classes):
            for step in steps:
                trial = bias.copy()
                trial[k] = step
                trial_value = value(trial)
                if trial_value > current + 1e-12:
                    bias, current, improved = trial, trial_value, True
        if not improved:
            break
    return bias - bias.mean()  # offsets matter only relative to each other


# --- the saved rule ---------------------------------------------------------------------------

Kind = Literal["argmax", "binary_threshold", "per_class", "bias", "ordinal"]
_KINDS: dict[str, tuple[str, ...]] = {  # which kinds each task can use
    "binary": ("argmax", "binary_threshold"),
    "multiclass": ("argmax", "bias", "ordinal"),
    "multilabel": ("per_class",),
}


@dataclass
class DecisionRule:
    """Everything 04_submit needs to turn raw test probabilities into labels; saved as JSON."""

    task: Task
    kind: Kind
    labels: list[str]
    threshold: float | None = None  # binary_threshold: positive when p_pos > threshold
    thresholds: list[float] | None = None  # per_class: one per label
    bias: list[float] | None = None  # bias: added to log p before the argmax
    cuts: list[float] | None = None  # ordinal: cut points of the expected class id (K - 1)
    temperature: float | None = None  # applied to the raw probabilities first (calibration)
    require_label: bool = True  # per_class: a row with no label gets its most likely one
    metric: str | None = None  # what the rule was tuned for (for the record)
    notes: dict[str, float | str] = field(default_factory=dict)  # e.g. why this threshold

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise KitError(f"DecisionRule task {self.task!r}: use one of {', '.join(TASKS)}.")
        if self.kind not in _KINDS[self.task]:
            raise KitError(
                f"DecisionRule kind {self.kind!r} does not fit a {self.task} task; "
                f"use one of {', '.join(_KINDS[self.task])}."
            )
        needed = {"binary_threshold": "threshold", "per_class": "thresholds", "bias": "bias",
                  "ordinal": "cuts"}
        if self.kind in needed and getattr(self, needed[self.kind]) is None:
            raise KitError(f"DecisionRule kind {self.kind!r} needs `{needed[self.kind]}` set.")
        for name in ("thresholds", "bias"):
            values = getattr(self, name)
            if values is not None:
                if len(values) != len(self.labels):
                    raise KitError(
                        f"DecisionRule has {len(values)} {name} for {len(self.labels)} labels; "
                        "give one per label."
                    )
                setattr(self, name, [float(v) for v in values])
        if self.cuts is not None:
            if len(self.cuts) != len(self.labels) - 1:
                raise KitError(f"DecisionRule has {len(self.cuts)} ordinal cuts for "
                               f"{len(self.labels)} labels; give one fewer cut than labels.")
            self.cuts = [float(v) for v in self.cuts]
        if self.threshold is not None:
            self.threshold = float(self.threshold)
        if self.temperature is not None:
            self.temperature = float(self.temperature)

    @classmethod
    def default(
        cls, task: str, labels: list[str], temperature: float | None = None
    ) -> DecisionRule:
        """The untuned rule: argmax, or 0.5 per column (multilabel, with require_label)."""
        if task == "multilabel":
            return cls(
                task, "per_class", labels, thresholds=[0.5] * len(labels), temperature=temperature
            )
        return cls(task, "argmax", labels, temperature=temperature)

    def probabilities(self, probs: np.ndarray) -> np.ndarray:
        """Raw probabilities after the rule's temperature (unchanged when it has none)."""
        if self.temperature is None:
            return np.asarray(probs, dtype=float)
        return apply_temperature(probs, self.temperature, self.task)

    def apply(self, probs: np.ndarray) -> np.ndarray:
        """Labels (class ids, or multi-hot for multilabel) for raw model probabilities."""
        probs = np.asarray(probs, dtype=float)
        if probs.ndim != 2 or probs.shape[1] != len(self.labels):
            raise KitError(
                f"probs has shape {probs.shape}; this rule expects {len(self.labels)} columns "
                f"({', '.join(self.labels[:5])}{', ...' if len(self.labels) > 5 else ''})."
            )
        probs = self.probabilities(probs)
        if self.kind == "binary_threshold":
            return (probs[:, 1] > self.threshold).astype(int)
        if self.kind == "per_class":
            return apply_per_class_thresholds(probs, self.thresholds, self.require_label)
        if self.kind == "bias":
            return apply_class_bias(probs, self.bias)
        if self.kind == "ordinal":
            return apply_cuts(probs, np.asarray(self.cuts))
        return default_predictions(probs, self.task)

    def to_json(self, path: str | Path) -> None:
        """Write the rule as JSON (floats written exactly, so `from_json` returns an equal rule)."""
        write_json(Path(path), asdict(self))

    @classmethod
    def from_json(cls, path: str | Path) -> DecisionRule:
        """Read a rule written by `to_json`; unknown keys are an error, not silently dropped."""
        path = Path(path)
        if not path.exists():
            raise KitError(f"No decision rule at {path}: run 03_thresholds first.")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise KitError(f"{path} is not valid JSON ({err}); re-run 03_thresholds.") from err
        if not isinstance(data, dict):
            raise KitError(f"{path} holds {type(data).__name__}, not a decision rule object.")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise KitError(
                f"{path}: unknown keys {unknown} in the decision rule; valid keys are "
                f"{sorted(known)}. Re-run 03_thresholds to rewrite it."
            )
        return cls(**data)
