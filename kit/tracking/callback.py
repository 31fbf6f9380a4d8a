"""A TrainerCallback that logs training curves to the run's MLflow run as they happen."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from kit.tracking.mlflow_tracker import Tracker


class MetricsCallback(TrainerCallback):
    """Every Trainer log (train loss, learning rate, validation metrics) at its optimizer step.

    Keys are `<prefix>/<name>` (`transformer/loss`, `transformer/eval_f1_macro`). A resumed
    session retrains the steps after its checkpoint, which the killed one may have logged
    already: steps up to the last one logged for a key are skipped (one query per key).
    """

    def __init__(self, tracker: Tracker, prefix: str):
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
