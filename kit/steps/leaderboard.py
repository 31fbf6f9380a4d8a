"""The leaderboard view of 04_submit: this competition's runs of outputs/ in one table and plot."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from matplotlib.figure import Figure

from kit.core.rundir import RunDir
from kit.tracking.leaderboard import build_leaderboard, by_competition, plot_leaderboard


@dataclass
class Leaderboard:
    """The runs of this run's competition (outputs/leaderboard.csv holds every competition's),
    scored by its metric, and their plot."""

    table: pd.DataFrame
    plot: Figure | None
    competition: str = ""
    metric: str = ""


def leaderboard(run: RunDir) -> Leaderboard:
    """Rebuild outputs/leaderboard.csv from every run folder; this competition's part and plot.

    Runs of other competitions (other metrics) are left out of the table and the plot: their
    scores do not compare.
    """
    table = build_leaderboard(run.path.parent)
    slug, metric = run.params.competition.slug, run.params.competition.metric
    part = by_competition(table).get((slug, metric), table.iloc[0:0])
    plot = plot_leaderboard(part, metric, slug) if not part.empty else None
    if plot is not None:
        plot.savefig(run.path.parent / "leaderboard.png", dpi=110, bbox_inches="tight")
    return Leaderboard(part, plot, slug, metric)
