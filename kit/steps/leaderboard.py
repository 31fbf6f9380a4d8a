"""The leaderboard view of 04_submit: every run of outputs/ in one table and one plot."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from matplotlib.figure import Figure

from kit.core.rundir import RunDir
from kit.tracking.leaderboard import build_leaderboard, plot_leaderboard


@dataclass
class Leaderboard:
    """outputs/leaderboard.csv as a table, and its plot (for this run's metric)."""

    table: pd.DataFrame
    plot: Figure | None


def leaderboard(run: RunDir) -> Leaderboard:
    """Rebuild outputs/leaderboard.csv from every run folder; plot the runs on this metric."""
    table = build_leaderboard(run.path.parent)
    metric = run.params.competition.metric
    plot = plot_leaderboard(table, metric) if (table.get("metric") == metric).any() else None
    if plot is not None:
        plot.savefig(run.path.parent / "leaderboard.png", dpi=110, bbox_inches="tight")
    return Leaderboard(table, plot)
