"""`python -m kit` commands that compete: train, folds, ensemble, search and leaderboard."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, get_args, get_type_hints

import yaml

from kit.config.compete import EnsembleParams
from kit.errors import KitError

COMMANDS = ("train", "folds", "ensemble", "search", "leaderboard")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the commands on the `kit` parser."""
    train = sub.add_parser("train", help="02_train without the notebook: every model, every fold")
    _run_args(train)
    folds = sub.add_parser("folds", help="make (or show) a run's k folds: rows per class per fold")
    _run_args(folds)
    ens = sub.add_parser("ensemble", help="blend finished runs into a new run; decide; submit")
    ens.add_argument("params", help="the params file the runs were trained with")
    ens.add_argument("--name", required=True, help="the new run's name")
    ens.add_argument("--runs", nargs="+", required=True, help="run folder names under outputs/")
    ens.add_argument("--method", choices=get_args(get_type_hints(EnsembleParams)["method"]),
                     help="ensemble.method (default: the params file's)")
    ens.add_argument("--rank", action="store_true", help="blend ranks (rank averaging)")
    search = sub.add_parser("search", help="run or resume the params file's `search`")
    search.add_argument("params")
    search.add_argument("--trials", type=int, help="total trials (default: search.trials)")
    search.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="params override for every trial")
    board = sub.add_parser("leaderboard", help="outputs/leaderboard.csv and one table and plot "
                           "per competition")
    board.add_argument("--outputs", default="outputs", help="the folder of run folders")
    board.add_argument("--competition", default=None, metavar="SLUG",
                       help="only this competition's runs")
    board.add_argument("--kaggle", action="store_true",
                       help="add Kaggle's public score and status of each run's submissions "
                       "(`kaggle competitions submissions`; needs credentials)")


def _run_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("params")
    parser.add_argument("--name", default="", help="run name (default: the params `name`)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="params override, e.g. --set cv.folds=5 (repeatable)")


def overrides_from(pairs: list[str]) -> dict[str, Any]:
    """`key=value` pairs (values read as YAML: 5, 1.0e-4, true, [a, b]) as params overrides."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise KitError(f"--set {pair!r}: write KEY=VALUE, e.g. --set cv.folds=5.")
        out[key.strip()] = yaml.safe_load(value)
    return out


def run_command(args: argparse.Namespace) -> int:
    from kit.steps.start import start

    if args.command == "train":
        from kit.steps.train import train_models

        run, comp = start(args.params, args.name, overrides_from(args.set))
        print(train_models(run, comp).to_string())
        print(run.path)
    elif args.command == "folds":
        from kit.data.folds import load_or_make_folds

        run, comp = start(args.params, args.name, overrides_from(args.set))
        print(fold_table(comp, load_or_make_folds(run, comp)).to_string())
    elif args.command == "ensemble":
        return _ensemble(args)
    elif args.command == "search":
        from kit.search.study import run_search

        result = run_search(args.params, overrides_from(args.set), trials=args.trials)
        print(result.table.to_string(index=False))
        print(f"best: {result.best_run} ({result.best_value:.4f}); trials in "
              f"{result.folder / 'trials.csv'}")
    elif args.command == "leaderboard":
        return _leaderboard(Path(args.outputs), args.competition, args.kaggle)
    return 0


def _leaderboard(outputs: Path, competition: str | None, kaggle: bool) -> int:
    """One table and one plot per competition (its metric named); Kaggle's scores on request.

    The plot of the only (or chosen) competition is outputs/leaderboard.png; with several, each
    also has outputs/leaderboard_<slug>.png and leaderboard.png is the one with the most runs.
    """
    from kit.tracking.leaderboard import (
        LEADERBOARD_FILE,
        build_leaderboard,
        by_competition,
        plot_leaderboard,
    )

    table = build_leaderboard(outputs)
    if table.empty:
        raise KitError(f"No run in {outputs} has trained a model yet.")
    if kaggle:
        from kit.kaggle.scores import SUBMISSIONS_FILE, kaggle_scores

        slugs = [competition] if competition else sorted(table["competition"].dropna().unique())
        table = build_leaderboard(outputs, kaggle_scores(outputs, slugs, list(table["run"])))
    parts = by_competition(table, competition)
    for (slug, metric), part in parts.items():
        print(f"\n{slug} (metric {metric}, {len(part)} run{'s' if len(part) > 1 else ''}):")
        print(part.to_string(index=False))
        fig = plot_leaderboard(part, metric, slug)
        if len(parts) > 1:
            fig.savefig(outputs / f"leaderboard_{slug}.png", dpi=110, bbox_inches="tight")
    if len(parts) > 1:  # the competition with the most runs
        fig = plot_leaderboard(table[table["competition"].isin([s for s, _ in parts])])
    fig.savefig(outputs / "leaderboard.png", dpi=110, bbox_inches="tight")
    print(outputs / LEADERBOARD_FILE)
    if kaggle:
        print(outputs / SUBMISSIONS_FILE)
    return 0


def fold_table(comp: Any, folds: list) -> Any:
    """Rows per class in each fold's held-out part (single-label) or label counts (multilabel)."""
    import numpy as np
    import pandas as pd

    counts = {}
    for f in folds:
        y = comp.y[f.val_rows]
        per = y.sum(axis=0) if y.ndim == 2 else np.bincount(y, minlength=len(comp.labels))
        counts[f.tag] = dict(zip(comp.labels, per.tolist(), strict=True))
    return pd.DataFrame(counts).T.assign(rows=[len(f.val_rows) for f in folds])


def _ensemble(args: argparse.Namespace) -> int:
    from kit.steps.decide import fit_decision_rule
    from kit.steps.start import start
    from kit.steps.submit import make_submission
    from kit.steps.train import train_models

    # It trains nothing: the training-only sections (a student's teacher, pseudo-labels) go back
    # to their defaults, which the schema would otherwise refuse beside `models: []`.
    overrides: dict[str, Any] = {"models": [], "ensemble.enabled": True,
                                 "ensemble.runs": list(args.runs), "submit.model": "ensemble",
                                 "distill": None, "pseudo": None}
    if args.method:
        overrides["ensemble.method"] = args.method
    if args.rank:
        overrides["ensemble.rank"] = True
    run, comp = start(args.params, args.name, overrides)
    print(train_models(run, comp).to_string())
    decision = fit_decision_rule(run, comp)
    print("rule:", decision.describe_rule())
    result = make_submission(run, comp)
    print("local scores:", result.scores)
    print("kaggle:", result.answer)
    run.finish()
    print(run.path)
    return 0
