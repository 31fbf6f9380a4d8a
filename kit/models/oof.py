"""Out-of-fold predictions: one fit per fold, saved as it ends, assembled into one model's result.

A k-fold model is the set of its fold fits. Each fit's probabilities are saved as
`predictions/folds/<kind>/<r0_f2>.npz` the moment it ends, so a killed run never trains a finished
fold again (the fold in progress resumes from its own checkpoint); with `seeds`, each seed's fit
is saved the same way (`r0_f2_s43.npz`) before the fold's seed mean. Assembled, the OOF
probabilities cover every training row once per repeat (averaged over repeats) and the test
probabilities are the mean over all fits: the same `Predictions` a hold-out model gives, with the
OOF rows as its validation rows, so thresholds, ensembles and the submission work unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kit.core.atomic import save_npz
from kit.core.rundir import Predictions, RunDir
from kit.data.competition import Competition
from kit.data.folds import Fold
from kit.errors import KitError


@dataclass
class FoldPredictions:
    """One fit's probabilities on its held-out rows and on test."""

    fold: Fold
    val_probs: np.ndarray
    test_probs: np.ndarray


def fold_path(folder: Path, kind: str, tag: str, seed: int | None = None) -> Path:
    """`<run folder>/predictions/folds/<kind>/r0_f2.npz`; one seed's fit of it `r0_f2_s43.npz`."""
    name = tag if seed is None else f"{tag}_s{seed}"
    return Path(folder) / "predictions" / "folds" / kind / f"{name}.npz"


def fold_file(run: RunDir, kind: str, fold: Fold) -> Path:
    """This run's file of `fold`'s fit (kit.models.seeds: one per seed, then their mean)."""
    return fold_path(run.path, kind, fold.tag, fold.seed)


def save_fold(run: RunDir, kind: str, fold: Fold, val_probs: np.ndarray,
              test_probs: np.ndarray) -> Path:
    """Keep a finished fit's probabilities (atomically): the fold is never trained again."""
    return save_npz(fold_file(run, kind, fold), val_rows=fold.val_rows, val_probs=val_probs,
                    test_probs=test_probs)


def load_fold(run: RunDir, kind: str, fold: Fold) -> FoldPredictions | None:
    """A finished fit's probabilities, or None when the fold has not finished."""
    return read_fold(fold_file(run, kind, fold), fold)


def read_fold(path: Path, fold: Fold) -> FoldPredictions | None:
    """The fit of `fold` saved at `path` (None when there is none), refused when it was
    predicted on other rows than `fold`'s."""
    if not path.exists():
        return None
    with np.load(path) as z:
        if not np.array_equal(z["val_rows"], fold.val_rows):
            raise KitError(
                f"{path} was predicted on other rows than fold {fold.tag} of folds.json: the "
                "folds changed since it was trained. Start a new run (another run name)."
            )
        return FoldPredictions(fold, z["val_probs"], z["test_probs"])


def assemble(kind: str, comp: Competition, fits: list[FoldPredictions]) -> Predictions:
    """OOF probabilities of every training row (mean over repeats) and the fold-mean on test."""
    if len(fits) == 1 and fits[0].fold.is_holdout:  # the hold-out split: nothing to assemble
        fit = fits[0]
        return Predictions(kind, comp.train_ids[fit.fold.val_rows], fit.val_probs,
                           comp.test_ids, fit.test_probs)
    n = len(comp.train_ids)
    width = fits[0].val_probs.shape[1]
    total = np.zeros((n, width))
    seen = np.zeros(n, dtype=int)
    for fit in fits:
        total[fit.fold.val_rows] += fit.val_probs
        seen[fit.fold.val_rows] += 1
    repeats = max(f.fold.repeat for f in fits) + 1
    if not (seen == repeats).all():  # folds.json partitions the rows once per repeat
        raise KitError(f"{kind}: OOF predictions cover rows {sorted(set(seen.tolist()))} times, "
                       f"not {repeats}; folds.json is damaged. Start a new run.")
    test = np.mean([f.test_probs for f in fits], axis=0)
    return Predictions(kind, comp.train_ids, total / repeats, comp.test_ids, test)
