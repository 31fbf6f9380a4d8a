"""Time budget: stop with a checkpoint before a platform's session limit, resume on the rerun."""

from __future__ import annotations

import time
from typing import Any

from transformers import TrainerCallback


def now() -> float:
    """Clock for the time budget (a function so tests can substitute a fake clock)."""
    return time.monotonic()


class TimeBudget(TrainerCallback):
    """Stops with a checkpoint when the next steps would overrun the time budget."""

    def __init__(self, budget_seconds: float | None, started: float):
        self.budget = budget_seconds
        self.started = started
        self.stopped_at: int | None = None
        self._t_begin = started
        self._step_begin = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._t_begin = now()
        self._step_begin = state.global_step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.budget is None or state.global_step >= state.max_steps:
            return
        t = now()
        per_step = (t - self._t_begin) / max(1, state.global_step - self._step_begin)
        # Margin: two more steps' worth of time for the checkpoint write and the predictions.
        if _any_rank(t - self.started + 2 * per_step >= self.budget):
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step


def _any_rank(stop: bool) -> bool:
    """Under DDP every rank stops at the same step (else the others wait forever for it)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return stop
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    flag = torch.tensor([int(stop)], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())
