"""Training progress as text lines (the log, and KIT_PROGRESS_FILE) instead of Trainer's bars.

transformers' `NotebookProgressCallback` draws an HTML widget, which a headless run records as
`<IPython.core.display.HTML object>`, and `ProgressCallback` draws a tqdm bar. `TextProgress`
replaces them (`use_text_progress`) with one line such as

    step 120/404 (29%) | 1m12s elapsed | ETA 2m50s | loss 0.412 | val f1_macro 0.873 (step 100)

logged at the start, every `KIT_PROGRESS_INTERVAL` seconds (30), after each evaluation and at
the end, and kept in `$KIT_PROGRESS_FILE` for ./run_all.sh (kit.core.progress).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from transformers import PrinterCallback, ProgressCallback, Trainer, TrainerCallback
from transformers.utils.notebook import NotebookProgressCallback

from kit.core.progress import ProgressLine, count_line

__all__ = ["TextProgress", "use_text_progress"]

log = logging.getLogger(__name__)


class TextProgress(TrainerCallback):
    """Logs training progress as text; the ETA counts only the steps done in this process."""

    def __init__(self, *, interval: float | None = None,
                 clock: Callable[[], float] = time.monotonic, path: Any = None):
        self.clock = clock
        self.line = ProgressLine(log, interval=interval, clock=clock, path=path)
        self._started = 0.0
        self._first_step = 0
        self._loss: float | None = None
        self._val: tuple[str, float, int] | None = None
        self._eval_batches: tuple[int, int] | None = None

    def text(self, state: Any) -> str:
        """The current progress line."""
        done_here = state.global_step - self._first_step
        parts = [count_line("step", state.global_step, state.max_steps,
                            self.clock() - self._started, done_here)]
        if self._loss is not None:
            parts.append(f"loss {self._loss:.3f}")
        if self._val is not None:
            name, value, step = self._val
            parts.append(f"val {name} {value:.3f} (step {step})")
        if self._eval_batches is not None:
            parts.append(f"evaluating {self._eval_batches[0]}/{self._eval_batches[1]}")
        elif done_here == 0 and self._first_step > 0:
            parts.append(f"resumed at step {self._first_step}")
        return " | ".join(parts)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # A resumed run starts at its checkpoint's step: the rate counts from here.
        self._started = self.clock()
        self._first_step = state.global_step
        self.line.update(self.text(state), force=True)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.line.update(self.text(state))

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None,
               **kwargs: Any) -> None:
        if logs and "loss" in logs:
            self._loss = float(logs["loss"])

    def on_prediction_step(self, args: Any, state: Any, control: Any,
                           eval_dataloader: Any = None, **kwargs: Any) -> None:
        done = self._eval_batches[0] + 1 if self._eval_batches else 1
        try:
            total = len(eval_dataloader)
        except TypeError:
            total = 0
        self._eval_batches = (done, total)
        self.line.update(self.text(state))

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None,
                    **kwargs: Any) -> None:
        self._eval_batches = None
        name = (args.metric_for_best_model or "loss").removeprefix("eval_")
        value = (metrics or {}).get(f"eval_{name}")
        if value is not None:
            self._val = (name, float(value), int(state.global_step))
        self.line.update(self.text(state), force=True)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.line.update(self.text(state), force=True)


def use_text_progress(trainer: Trainer, progress: TextProgress | None = None) -> TextProgress:
    """Swap Trainer's progress bar (HTML in a notebook, tqdm elsewhere) and its printed log
    dicts for `TextProgress`; returns the callback in use."""
    for bar in (PrinterCallback, ProgressCallback, NotebookProgressCallback):
        while trainer.pop_callback(bar) is not None:
            pass
    progress = progress or TextProgress()
    if progress not in trainer.callback_handler.callbacks:
        trainer.add_callback(progress)
    return progress
