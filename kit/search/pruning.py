"""Report a hold-out transformer fit's evaluations to Optuna and stop it when pruned."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback


class PruningCallback(TrainerCallback):
    """At each evaluation: `trial.report(metric, step)`; a pruned trial raises TrialPruned."""

    def __init__(self, trial: Any, metric: str) -> None:
        self.trial, self.key = trial, f"eval_{metric}"

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None,
                    **kwargs: Any) -> None:
        import optuna

        if not metrics or self.key not in metrics:
            return
        self.trial.report(float(metrics[self.key]), step=state.global_step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"step {state.global_step}: {self.key} "
                                     f"{metrics[self.key]:.4f}")
