"""A TrainerCallback that logs training curves to the run's MLflow run as they happen."""

from __future__ import annotations

from typing import Any, Protocol

from transformers import TrainerCallback


class CurveLog(Protocol):
    """Where the curves go (kit.tracking.mlflow_tracker.Tracker): what was logged, and more."""

    def last_step(self, key: str) -> int | None: ...

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None: ...


class MetricsCallback(TrainerCallback):
    """Every Trainer log (train loss, learning rate, validation metrics) at its optimizer step.

    Keys are `<prefix>/<name>` (`transformer/loss`, `transformer/eval_f1_macro`). A resumed
    session retrains the steps after its checkpoint, which the killed one may have logged
    already: steps up to the last one logged for a key are skipped (one query per key).
    """

    def __init__(self, tracker: CurveLog, prefix: str):
        self.tracker = tracker
        self.prefix = prefix
        self.logged_up_to: dict[str, int | None] = {}

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        step = int(state.global_step)
        fresh = {}
        for name, value in (logs or {}).items():
            key = f"{self.prefix}/{name}"
            if key not in self.logged_up_to:
                self.logged_up_to[key] = self.tracker.last_step(key)
            last = self.logged_up_to[key]
            if last is None or step > last:
                fresh[key] = value
        self.tracker.log_metrics(fresh, step)
