"""The leaderboard of runs: one row per run folder under `outputs/`, written as leaderboard.csv.

Each row: the params that differ between the runs (dotted keys), the chosen model, its CV score
(OOF, or validation for a hold-out run) with the mean ± std over folds, the local public/private
scores of the run's last submission, wall time and peak memory; with Kaggle's answer
(kit.kaggle.scores) also Kaggle's public score and status. Runs are compared within
their competition, on its metric: `by_competition` splits the table, one part (and one plot)
per competition with its metric named.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from matplotlib.figure import Figure

from kit.core.atomic import write_atomic
from kit.core.run_state import ModelReport, RunState
from kit.errors import KitError

log = logging.getLogger(__name__)
LEADERBOARD_FILE = "leaderboard.csv"
IGNORED_KEYS = ("name", "output_dir", "submit.message")  # differ by design, say nothing


def _section_paths() -> set[str]:
    """Dotted paths of the params sections (`competition`, `transformer.lora`): where to
    recurse; any other dict (a label map, a search grid) is one value."""
    import dataclasses
    import typing

    from kit.config.schema import Params

    paths: set[str] = set()

    def walk(cls: type, prefix: str) -> None:
        for name, tp in typing.get_type_hints(cls).items():
            if dataclasses.is_dataclass(tp):
                paths.add(prefix + name)
                walk(tp, f"{prefix}{name}.")

    walk(Params, "")
    return paths


def _flatten(d: dict[str, Any], sections: set[str], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and path in sections:
            out.update(_flatten(value, sections, f"{path}."))
        else:
            out[path] = json.dumps(value) if isinstance(value, (list, dict)) else value
    return out


def _wall_seconds(run: Path, state: RunState) -> float | None:
    """Notebook durations papermill recorded, else the models' training seconds."""
    total = 0.0
    for nb in sorted((run / "notebooks").glob("*.ipynb")):
        try:
            total += float(json.loads(nb.read_text())["metadata"]["papermill"]["duration"] or 0)
        except (KeyError, ValueError, TypeError):
            continue
    if total:
        return round(total, 1)
    seconds = [m.train_seconds for m in state.models.values() if m.train_seconds is not None]
    return round(sum(seconds), 1) if seconds else None


def _peak_rss_gb(run: Path) -> float | None:
    """The largest peak RSS of the run's steps (env.json `resources`), in GB."""
    try:
        steps = json.loads((run / "env.json").read_text()).get("resources", {})
    except (OSError, json.JSONDecodeError):
        return None
    peaks = [s["peak_rss_mb"] for s in steps.values() if isinstance(s, dict)
             and s.get("peak_rss_mb") is not None]
    return round(max(peaks) / 1024, 2) if peaks else None


def run_row(run: Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(the scores row, the flattened params) of one run folder; None if it trained nothing."""
    try:
        params = yaml.safe_load((run / "params.yaml").read_text())
        state = RunState.read(run)
    except (FileNotFoundError, yaml.YAMLError, KitError):
        return None
    if state.best is None:
        return None
    model, metric = state.best.model, state.best.metric
    chosen = state.models.get(model, ModelReport(scores={}))
    local = state.submission.local if state.submission else {}
    row = {
        "run": run.name, "competition": params.get("competition", {}).get("slug"),
        "metric": metric, "model": model,
        "cv_score": chosen.score(metric), "cv_mean": chosen.cv_mean,
        "cv_std": chosen.cv_std, "folds": chosen.folds or 1,
        "rule_score": state.decision.validation_rule if state.decision else None,
        "local_public": local.get("local_public"), "local_private": local.get("local_private"),
        "wall_seconds": _wall_seconds(run, state), "peak_rss_gb": _peak_rss_gb(run),
        "finished": (run / "FINISHED").exists(),
    }
    return row, _flatten(params, _section_paths())


def build_leaderboard(outputs: str | Path, kaggle: pd.DataFrame | None = None) -> pd.DataFrame:
    """All runs under `outputs`, grouped by competition, best first; saves
    outputs/leaderboard.csv. `kaggle`: per-run Kaggle columns (kit.kaggle.scores)."""
    outputs = Path(outputs)
    rows, params = [], []
    for run in sorted(p for p in outputs.iterdir() if (p / "params.yaml").is_file()):
        found = run_row(run)
        if found:
            rows.append(found[0])
            params.append(found[1])
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    # The params that differ between runs of the same competition (runs of different
    # competitions differ in everything about their data; that says nothing).
    differing: list[str] = []
    for slug in table["competition"].unique():
        group = [p for p, s in zip(params, table["competition"], strict=True) if s == slug]
        keys = sorted({k for p in group for k in p} - set(IGNORED_KEYS))
        differing += [k for k in keys if k not in differing and
                      len({json.dumps(p.get(k), default=str) for p in group}) > 1]
    for key in sorted(differing):
        table[key] = [p.get(key) for p in params]
    if kaggle is not None:
        table = table.merge(kaggle, on="run", how="left")
    table = table.sort_values(["competition", "metric", "cv_score"],
                              ascending=[True, True, False], kind="stable")
    write_atomic(outputs / LEADERBOARD_FILE, table.to_csv(index=False))
    return table.reset_index(drop=True)


def by_competition(table: pd.DataFrame,
                   competition: str | None = None) -> dict[tuple[str, str], pd.DataFrame]:
    """(competition, metric) -> its runs, best first; only `competition` when given."""
    if competition is not None and competition not in set(table.get("competition", [])):
        known = ", ".join(sorted(map(str, table.get("competition", pd.Series()).unique())))
        raise KitError(f"No run of competition {competition!r} on the leaderboard. Fix: pass "
                       f"one of: {known or '(no runs yet)'}.")
    parts: dict[tuple[str, str], pd.DataFrame] = {}
    if table.empty:
        return parts
    for (slug, metric), part in table.groupby(["competition", "metric"], sort=True):
        if competition is None or slug == competition:
            # Params that differ only in another competition's runs are empty here.
            empty = [c for c in part.columns if "." in c and part[c].isna().all()]
            parts[(str(slug), str(metric))] = part.drop(columns=empty).reset_index(drop=True)
    return parts


def plot_leaderboard(table: pd.DataFrame, metric: str | None = None,
                     competition: str | None = None) -> Figure:
    """CV score (± std over folds), local private and Kaggle public score per run, for one
    competition (default: the one with the most runs) on its metric."""
    if competition is not None:
        table = table[table["competition"] == competition]
    metric = metric or table["metric"].mode().iloc[0]
    part = table[table["metric"] == metric]
    competition = competition or part["competition"].mode().iloc[0]
    part = part[part["competition"] == competition].iloc[::-1]
    fig = Figure(figsize=(7, 0.45 * len(part) + 1.2))
    ax = fig.subplots()
    y = range(len(part))
    ax.barh(y, part["cv_score"].astype(float), xerr=part["cv_std"].astype(float).fillna(0),
            color="#4c72b0", alpha=0.8, label="CV (OOF or validation), ± std over folds")
    if part["local_private"].notna().any():
        ax.scatter(part["local_private"].astype(float), y, color="#dd8452", zorder=3,
                   label="local private")
    kaggle = part.get("kaggle_public", pd.Series(dtype=float)).astype(float)
    if kaggle.notna().any():
        ax.scatter(kaggle, y, color="#55a868", marker="D", zorder=3, label="Kaggle public")
    ax.set_yticks(list(y), [f"{r} ({m})" for r, m in zip(part["run"], part["model"],
                                                          strict=True)])
    low = pd.concat([part["cv_score"], part["local_private"], kaggle]).astype(float).min()
    ax.set_xlim(max(0.0, low - 0.05), None)  # min skips NaN
    ax.set_xlabel(metric)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"Runs of {competition}, scored by {metric}")
    fig.tight_layout()
    return fig
