"""k-fold assignment of the training rows: stratified, grouped or multilabel, seeded and saved.

Every model of a run (and every run with the same data, seed and `cv`) uses the same folds: they
are made once from the seed and saved as folds.json, keyed by the training ids, so that
out-of-fold (OOF) predictions of different models and runs line up row by row for ensembling.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

from kit.core.atomic import write_json
from kit.core.rundir import RunDir
from kit.data.competition import Competition
from kit.data.multilabel_folds import iterative_folds
from kit.data.split import group_values, load_or_make_split
from kit.errors import KitError

log = logging.getLogger(__name__)
FOLDS_FILE = "folds.json"


HOLDOUT = -1  # Fold.fold of the single hold-out split
REFIT = -2  # Fold.fold of the full-data refit after k folds (`cv.refit`)


@dataclass(frozen=True)
class Fold:
    """One model fit: train on `train_rows`, predict `val_rows` (its out-of-fold rows).

    `seed`: one of the model's `seeds` (each fold is fitted once per seed); None: the run's seed.
    """

    repeat: int
    fold: int
    train_rows: np.ndarray
    val_rows: np.ndarray
    seed: int | None = None

    @property
    def is_holdout(self) -> bool:
        """The single hold-out split (`validation.folds` off), not one of k folds."""
        return self.fold == HOLDOUT

    @property
    def is_refit(self) -> bool:
        """The fit on all training rows after the k folds (no validation rows)."""
        return self.fold == REFIT

    @property
    def tag(self) -> str:
        """`r0_f2`: the fold's folder and file name; `holdout` for the single split, `full` for
        the refit (the seed is not part of it: a fold's seeds share its tag)."""
        return ("holdout" if self.is_holdout else "full" if self.is_refit
                else f"r{self.repeat}_f{self.fold}")


def refit_fold(comp: Competition) -> Fold:
    """The full-data refit: every training row, none held out."""
    return Fold(0, REFIT, np.arange(len(comp.train_ids)), np.array([], dtype=int))


def assign_folds(comp: Competition, folds: int, seed: int, stratify: bool = True,
                 group_column: str | None = None) -> np.ndarray:
    """Fold number (0..k-1) of every training row.

    Single-label tasks are stratified on the label (StratifiedKFold, or StratifiedGroupKFold so
    that a group never straddles folds); multilabel tasks use iterative stratification
    (kit.data.multilabel_folds) so every fold holds each label's share; with a group column,
    multilabel rows fall back to GroupKFold.
    """
    n = len(comp.train)
    rows = np.arange(n)
    if n < folds:
        raise KitError(
            f"The training file has {n} rows, fewer than `cv.folds` {folds}. Use fewer folds "
            "or more rows (check `competition.max_rows`)."
        )
    groups = group_values(comp, group_column) if group_column else None
    if groups is not None and len(np.unique(groups)) < folds:
        raise KitError(
            f"`validation.group_column` {group_column!r} has {len(np.unique(groups))} distinct "
            f"values, fewer than `cv.folds` {folds}. Use fewer folds or a finer group column."
        )
    if comp.task == "multilabel":
        if groups is not None:
            splits = GroupKFold(n_splits=folds).split(rows, groups=groups)
        elif stratify:
            return iterative_folds(comp.y, folds, seed)
        else:
            splits = KFold(n_splits=folds, shuffle=True, random_state=seed).split(rows)
    else:
        y = comp.y if stratify else np.zeros(n, dtype=int)
        smallest = np.bincount(y)[np.bincount(y) > 0].min()
        if stratify and smallest < folds:
            log.warning(f"A class has {smallest} training rows, fewer than {folds} folds: some "
                        "folds miss it (scikit-learn warns too).")
        if groups is not None:
            splits = StratifiedGroupKFold(n_splits=folds, shuffle=True,
                                          random_state=seed).split(rows, y, groups)
        else:
            splits = StratifiedKFold(n_splits=folds, shuffle=True,
                                     random_state=seed).split(rows, y)
    fold_of = np.full(n, -1, dtype=int)
    for k, (_, val) in enumerate(splits):
        fold_of[val] = k
    assert (fold_of >= 0).all(), "a row fell in no fold"  # scikit-learn's contract
    return fold_of


def load_or_make_folds(run: RunDir, comp: Competition) -> list[Fold]:
    """The run's fits, in order: the hold-out split (`cv.folds` 1), or repeats x folds.

    The k-fold assignment is saved as folds.json (training id -> fold, per repeat) on first use
    and read back after, so a resumed run, every model and every later notebook see the same
    folds; a training file that changed since is refused.
    """
    cv, v = run.params.cv, run.params.validation
    if cv.folds == 1:
        train_rows, val_rows = load_or_make_split(run, comp)
        return [Fold(0, HOLDOUT, train_rows, val_rows)]
    path = run.path / FOLDS_FILE
    ids = [str(i) for i in comp.train_ids.tolist()]
    if path.exists():
        saved = json.loads(path.read_text())
        if sorted(saved["ids"]) != sorted(ids):
            raise KitError(
                f"{path} was made for other training rows ({len(saved['ids'])} ids, this data "
                f"has {len(ids)}): the training file changed since this run made its folds. "
                "Start a new run (another run name), or put the old training file back."
            )
        where = {i: k for k, i in enumerate(saved["ids"])}
        order = np.array([where[i] for i in ids])
        assignments = [np.asarray(a)[order] for a in saved["fold_of"]]
    else:
        assignments = [assign_folds(comp, cv.folds, run.params.seed + r, v.stratify,
                                    v.group_column) for r in range(cv.repeats)]
        write_json(path, {"folds": cv.folds, "repeats": cv.repeats, "seed": run.params.seed,
                          "ids": ids, "fold_of": [a.tolist() for a in assignments]})
    return [Fold(r, k, np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k))
            for r, fold_of in enumerate(assignments) for k in range(cv.folds)]
