"""Seed averaging: each fold (or the hold-out split, or the refit) fitted once per seed, averaged.

`transformer.seeds: [42, 43, 44]` fits every fold three times, each with its own seed (the head's
initialisation, dropout and the data order follow it), and averages the probabilities on the
fold's validation rows and on test. Each seed's fit is saved the moment it ends
(kit.models.oof: `predictions/folds/<kind>/r0_f2_s43.npz`), so a killed run never trains a
finished seed again and the seed in progress resumes from its own checkpoints (its model folder
is `models/<kind>/r0_f2/s43`, kit.models.kinds.base.model_dir). Each seed's score on each fold
is a fold score of its own in the run state (`r0_f2/s43`), and each seed's own OOF (or
validation) score goes to the model's report (`seed_scores`), so 02 shows what averaging the
seeds gained.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

import numpy as np

from kit.config.params import Params
from kit.core.progress import show_progress
from kit.core.run_state import FoldScore
from kit.core.rundir import Predictions, RunDir
from kit.data.competition import Competition
from kit.data.folds import Fold
from kit.errors import KitError
from kit.evaluation import metrics
from kit.models.kinds import FitOutput, get_kind
from kit.models.oof import FoldPredictions, assemble, fold_file, load_fold, save_fold

__all__ = ["fit_seeds", "seed_predictions", "seed_scores", "seeds_of"]

log = logging.getLogger(__name__)


def seeds_of(params: Params, kind: str) -> list[int | None]:
    """The seeds `kind` fits each fold with: its settings' `seeds` (its params section's, or a
    student's merged transformer settings), else [None] (one fit with the run's `seed`, in the
    folders and files of a model without seeds)."""
    found = get_kind(kind)
    settings = getattr(found, "settings", None)  # a kind that trains with derived settings
    section = settings(params) if settings else getattr(params, found.params_section)
    return list(getattr(section, "seeds", None) or [None])


def fit_seeds(run: RunDir, comp: Competition, kind: str, fold: Fold,
              fit: Callable[[Fold], FitOutput]) -> FitOutput:
    """`fit(fold)` once per seed of `kind` (finished seeds are loaded, not refitted); the mean of
    their probabilities on `fold.val_rows` and on test, and the last fit's extras."""
    seeds = seeds_of(run.params, kind)
    if seeds == [None]:
        return fit(fold)
    metric = run.params.competition.metric
    vals, tests, extra = [], [], {}
    for seed in seeds:
        seeded = dataclasses.replace(fold, seed=seed)
        done = load_fold(run, kind, seeded)
        if done is not None:
            log.info(f"{kind} {fold.tag} seed {seed}: finished earlier; reusing its predictions.")
            vals.append(done.val_probs)
            tests.append(done.test_probs)
            continue
        show_progress(log, f"{kind} {fold.tag} seed {seed}: training started")
        started = time.time()
        val, test, fit_extra = fit(seeded)
        save_fold(run, kind, seeded, val, test)
        extra.update(fit_extra)
        vals.append(val)
        tests.append(test)
        if len(fold.val_rows) and not fold.is_holdout:  # the hold-out's: seed_scores
            score = float(metrics.score(metric, comp.y[fold.val_rows], val, None, comp.task))
            run.update_state(folds={kind: {f"{fold.tag}/s{seed}": FoldScore(
                metric, score, round(time.time() - started, 1), len(fold.val_rows))}})
            show_progress(log, f"{kind} {fold.tag} seed {seed}: {metric} = {score:.4f}")
    extra["seeds"] = seeds
    return np.mean(vals, axis=0), np.mean(tests, axis=0), extra


def seed_predictions(run: RunDir, comp: Competition, kind: str,
                     folds: list[Fold]) -> dict[int, Predictions]:
    """Each seed's own model over all `folds`, from the saved fits: its OOF (or validation)
    probabilities and its fold-mean test probabilities; {} for a model without seeds."""
    seeds = seeds_of(run.params, kind)
    if seeds == [None]:
        return {}
    out = {}
    for seed in seeds:
        fits: list[FoldPredictions] = []
        for fold in folds:
            seeded = dataclasses.replace(fold, seed=seed)
            done = load_fold(run, kind, seeded)
            if done is None:
                raise KitError(f"{fold_file(run, kind, seeded)} is missing, though fold "
                               f"{fold.tag} of {kind} finished: the run folder lost a file. "
                               "Start a new run (another run name).")
            fits.append(done)
        out[seed] = assemble(kind, comp, fits)
    return out


def seed_scores(run: RunDir, comp: Competition, kind: str, folds: list[Fold]) -> dict:
    """Each seed's own score over all `folds` (its OOF, or the hold-out validation), from the
    saved fits: `{"seed_scores": {"42": 0.91, ...}}`; {} for a model without seeds."""
    by_seed = seed_predictions(run, comp, kind, folds)
    if not by_seed:
        return {}
    metric = run.params.competition.metric
    scores = {str(seed): metrics.score(metric, comp.y[comp.train_rows(preds.val_ids)],
                                       preds.val_probs, None, comp.task)
              for seed, preds in by_seed.items()}
    return {"seed_scores": scores}
