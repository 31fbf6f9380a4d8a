"""The records a run's steps leave for later ones (kit.core.run_state holds them together).

Each is a frozen dataclass: the EDA summary, a model's report, a fold's score, the best model,
the decision and the submission, plus the params a step resolved. They are plain data: JSON
through `dataclasses.asdict` and back through their constructors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["BestModel", "Decision", "EdaSummary", "FoldScore", "ModelReport", "Resolved",
           "SubmissionRecord"]


@dataclass(frozen=True)
class Resolved:
    """A params key the params file left null, the value a step chose, and why."""

    key: str  # dotted, e.g. "transformer.max_length"
    value: Any
    source: str  # which step and how, e.g. "01_eda: p99 of the training texts' token lengths"


@dataclass(frozen=True)
class EdaSummary:
    """What 01_eda measured: sizes, the suggested length in which tokens, the data checks."""

    train_rows: int
    test_rows: int
    classes: int
    token_unit: str  # the tokenizer the lengths were counted with ("words" without one)
    suggested_max_length: int
    max_length_percentile: float
    checks: dict[str, int] = field(default_factory=dict)
    class_rows: dict[str, int] = field(default_factory=dict)
    label_mapping: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)  # the streamed pass ({} if none)


@dataclass(frozen=True)
class ModelReport:
    """One model's scores on its validation (hold-out) or out-of-fold rows, and its fit's facts."""

    scores: dict[str, float]  # metric name -> value (kit.evaluation.metrics.report)
    cv_mean: float | None = None  # k-fold: the mean and spread of the per-fold scores
    cv_std: float | None = None
    folds: int | None = None
    train_seconds: float | None = None
    details: dict[str, Any] = field(default_factory=dict)  # the kind's own (global_step, weights)

    def score(self, metric: str) -> float | None:
        value = self.scores.get(metric)
        return None if value is None else float(value)

    def row(self) -> dict[str, Any]:
        """Scores, then the k-fold spread and time, then the fit's facts: one table row (and
        the model's entry in metrics.json)."""
        typed = {name: getattr(self, name) for name in ("cv_mean", "cv_std", "folds",
                                                        "train_seconds")
                 if getattr(self, name) is not None}
        return {**self.scores, **typed, **self.details}


@dataclass(frozen=True)
class FoldScore:
    """One k-fold fit's score on its held-out rows."""

    metric: str
    score: float
    seconds: float
    rows: int


@dataclass(frozen=True)
class BestModel:
    """The model with the best validation score, which `submit.model: best` submits."""

    model: str
    metric: str
    validation: float


@dataclass(frozen=True)
class Decision:
    """The decision rule 03_thresholds chose for `model`, and what it scored on validation."""

    model: str
    rule: str  # argmax, threshold, per_class, bias, ordinal
    validation_default: float
    validation_rule: float
    threshold: float | None = None
    temperature: float | None = None
    calibration: Any = None
    threshold_search: Any = None
    rule_guard: Any = None


@dataclass(frozen=True)
class SubmissionRecord:
    """The last submission 04_submit made (or dry-ran), and its local scores when labelled."""

    file: str
    model: str
    rule: str
    command: list[str] | str | None
    kaggle_answer: str | None
    local: dict[str, float] = field(default_factory=dict)  # local_public, local_gap, ...
