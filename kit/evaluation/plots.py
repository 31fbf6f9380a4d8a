"""Figures for the 03_thresholds notebook: threshold curve, reliability, per-class thresholds.

Every function returns a matplotlib Figure built with the object API (no pyplot state), so it
works under the Agg backend in tests and displays inline in a notebook; save with fig.savefig.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import confusion_matrix

from kit.evaluation.calibration import expected_calibration_error, reliability_curve
from kit.evaluation.thresholds import BinaryChoice

__all__ = [
    "plot_confusion_matrix",
    "plot_per_class_thresholds",
    "plot_reliability",
    "plot_threshold_curve",
]


def plot_threshold_curve(
    sweep_df: pd.DataFrame, choice: BinaryChoice | None = None, metric_name: str = "score"
) -> Figure:
    """Validation score against threshold, with the 0.5 line, the chosen line and noise bands."""
    fig = Figure(figsize=(10, 4.5), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(sweep_df["threshold"], sweep_df["score"], color="C0", lw=2, label=metric_name)
    if {"score_low", "score_high"} <= set(sweep_df.columns):
        ax.fill_between(
            sweep_df["threshold"],
            sweep_df["score_low"],
            sweep_df["score_high"],
            color="C0",
            alpha=0.2,
            label="95% bootstrap band of the score",
        )
    ax.axvline(0.5, color="grey", ls="--", label="0.5 (argmax)")
    if choice is not None:
        low, high = choice.interval
        ax.axvspan(low, high, color="C1", alpha=0.12, label=f"best threshold 95%: {low}–{high}")
        ax.axvline(
            choice.best_threshold, color="C1", ls=":", label=f"raw peak {choice.best_threshold}"
        )
        state = "fell back to 0.5" if choice.fell_back else "tuned"
        ax.axvline(
            choice.threshold,
            color="C3",
            lw=2,
            label=f"chosen {choice.threshold} ({state}): {choice.score_at_threshold:.4f}",
        )
        if choice.fold_thresholds:
            folds = list(choice.fold_thresholds.values())
            ax.plot(
                folds,
                np.full(len(folds), ax.get_ylim()[0]),
                "|",
                color="k",
                ms=14,
                mew=2,
                label="best threshold per fold",
            )
    ax.set_xlim(0, 1)
    ax.set_xlabel("threshold on P(positive)")
    ax.set_ylabel(f"validation {metric_name}")
    ax.set_title(f"{metric_name} against the decision threshold")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8)  # keeps the curve clear
    return fig


def plot_reliability(
    y_true: np.ndarray,
    probs_before: np.ndarray,
    probs_after: np.ndarray | None,
    task: str,
    n_bins: int = 15,
) -> Figure:
    """Reliability diagram before (and after) calibration, ECE of each in the legend."""
    fig = Figure(figsize=(6, 6), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="grey", ls="--", label="perfectly calibrated")
    curves = [("before", probs_before, "C0")]
    if probs_after is not None:
        curves.append(("after temperature", probs_after, "C3"))
    for name, probs, color in curves:
        curve = reliability_curve(y_true, probs, task, n_bins)
        ece = expected_calibration_error(y_true, probs, task, n_bins)
        ax.plot(
            curve["predicted"],
            curve["observed"],
            "o-",
            color=color,
            label=f"{name} (ECE {ece:.4f})",
        )
    what = {"binary": "P(positive)", "multiclass": "top-label confidence"}.get(
        task, "per-label probability"
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel(f"predicted {what}")
    ax.set_ylabel("observed frequency" if task != "multiclass" else "observed accuracy")
    ax.set_title(f"Reliability ({task}, {n_bins} bins)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    return fig


def plot_per_class_thresholds(table: pd.DataFrame, metric_name: str = "F1") -> Figure:
    """Per-class thresholds (raw peak and shrunk) and the score gain each brings over 0.5.

    `table` is what `choose_per_class_thresholds` returns.
    """
    n = len(table)
    fig = Figure(figsize=(max(7, 0.35 * n + 3), 7), layout="constrained")
    ax_t, ax_g = fig.subplots(2, 1, sharex=True)
    x = np.arange(n)
    ax_t.axhline(0.5, color="grey", ls="--", label="0.5")
    ax_t.scatter(x, table["best_threshold"], color="C1", marker="x", label="raw peak")
    ax_t.scatter(x, table["threshold"], color="C0", label="chosen (shrunk toward 0.5)")
    ax_t.set_ylim(0, 1)
    ax_t.set_ylabel("threshold")
    ax_t.set_title("Per-class thresholds (few positives: pulled toward 0.5)")
    ax_t.legend(fontsize=8)
    ax_t.grid(alpha=0.3)

    gain = table["score_at_threshold"] - table["score_at_half"]
    ax_g.bar(x, gain, color=np.where(gain >= 0, "C2", "C3"))
    ax_g.axhline(0, color="k", lw=0.8)
    ax_g.set_ylabel(f"validation {metric_name} gain over 0.5")
    ax_g.set_xticks(x)
    ax_g.set_xticklabels(
        [f"{c} ({p})" for c, p in zip(table["class"], table["positives"], strict=True)],
        rotation=60,
        ha="right",
        fontsize=8,
    )
    ax_g.set_xlabel("class (validation positives)")
    ax_g.grid(alpha=0.3, axis="y")
    return fig


def plot_confusion_matrix(
    y_true: np.ndarray, pred: np.ndarray, labels: list[str], normalize: bool = True
) -> Figure:
    """Confusion matrix of class ids; normalized rows show recall per true class."""
    matrix = confusion_matrix(
        y_true, pred, labels=list(range(len(labels))), normalize="true" if normalize else None
    )
    n = len(labels)
    size = max(4.5, 0.5 * n + 2)
    fig = Figure(figsize=(size + 1, size), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(image, ax=ax, label="share of the true class" if normalize else "rows")
    if n <= 20:  # numbers stay readable up to about 20 classes
        for i in range(n):
            for j in range(n):
                value = matrix[i, j]
                text = f"{value:.2f}" if normalize else f"{int(value)}"
                dark = value > (0.5 if normalize else matrix.max() / 2)
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if dark else "black",
                )
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(labels, rotation=45, ha="right")
    ax.set_yticklabels(labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("Confusion matrix" + (" (rows normalized)" if normalize else ""))
    return fig
