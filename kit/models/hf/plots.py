"""Loss and validation-metric curves of a fine-tuning run, from Trainer's log history."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure

__all__ = ["plot_training_curves"]

_SKIP = {"eval_loss", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "epoch"}


def plot_training_curves(history: Sequence[dict[str, Any]], title: str | None = None) -> Figure:
    """Two panels: training and validation loss by step; validation metric(s) by step.

    `history` is `Trainer.state.log_history` (also `TransformerResult.history`): dicts with
    `step` and `loss` (training logs) or `eval_loss` and `eval_<metric>` (evaluations).
    """
    train = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    evals = [h for h in history if "eval_loss" in h and "step" in h]
    metric_names = sorted(
        {k for h in evals for k, v in h.items() if k.startswith("eval_") and k not in _SKIP
         and isinstance(v, (int, float))}
    )
    # Figure() rather than pyplot: no global state, no window, safe in tests and worker threads.
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax_loss, ax_metric = fig.subplots(1, 2)
    if train:
        ax_loss.plot(*zip(*train, strict=True), label="train loss", lw=1.2)
    if evals:
        ax_loss.plot([h["step"] for h in evals], [h["eval_loss"] for h in evals],
                     "o-", label="validation loss", lw=1.2, ms=3)
    ax_loss.set_xlabel("optimizer step")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("loss")
    for name in metric_names:
        points = [(h["step"], h[name]) for h in evals if name in h]
        ax_metric.plot(*zip(*points, strict=True), "o-", label=name.removeprefix("eval_"), ms=3)
    ax_metric.set_xlabel("optimizer step")
    ax_metric.set_title("validation metric")
    for ax in (ax_loss, ax_metric):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "no points logged", ha="center", va="center",
                    transform=ax.transAxes, color="gray")
    if title:
        fig.suptitle(title)
    return fig
