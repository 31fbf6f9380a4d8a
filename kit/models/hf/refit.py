"""The full-data refit's length: the mean best checkpoint step of the transformer's fold fits.

After the k folds, `cv.refit` trains the transformer once more on every training row. No row is
left to pick its best checkpoint or to stop it early, so it trains for the step count the folds
found best: the mean over the fold fits (every seed's, with `seeds`) of the step of their best
checkpoint (a fit without one, its last step), with validation and early stopping off. The steps
are the folds' own, not scaled: at the same batch size on k/(k-1) times the rows, the refit sees
each row a little less often than a fold did, the usual choice ("train on all data for the best
number of iterations") and the one the schedule's warmup ratio and decay were tuned for.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from kit.config.params import TransformerParams
from kit.errors import KitError
from kit.models.hf.resume import RESULT_FILE
from kit.models.kinds.base import fit_dirs

__all__ = ["fold_best_steps", "refit_settings"]


def fold_best_steps(folds_dir: Path) -> list[int]:
    """The best checkpoint step of each finished fold fit under `folds_dir` (models/transformer),
    in fold and seed order."""
    found = [d for d in fit_dirs(folds_dir) if d != folds_dir]
    unfinished = [str(d) for d in found if not (d / RESULT_FILE).is_file()]
    if unfinished:
        raise KitError(f"The fold fit(s) {', '.join(unfinished)} have not finished (no "
                       f"{RESULT_FILE}); the full-data refit takes its step count from all folds. "
                       "Rerun 02_train: the folds finish first, then the refit.")
    if not found:
        raise KitError(
            f"No finished fold fit (r*_f*/{RESULT_FILE}) under {folds_dir}: the full-data refit "
            "takes its step count from the folds, which train first. Rerun 02_train with "
            "`cv.folds` >= 2 so that the folds finish before the refit."
        )
    steps = []
    for d in found:
        result = json.loads((d / RESULT_FILE).read_text())["result"]
        steps.append(int(result.get("best_step") or result["global_step"]))
    return steps


def refit_settings(cfg: TransformerParams, folds_dir: Path) -> tuple[TransformerParams, list[int]]:
    """`cfg` for the refit (max_steps: the folds' mean best step, rounded; no early stopping,
    which needs validation rows), and the folds' best steps it came from."""
    steps = fold_best_steps(folds_dir)
    mean = max(1, round(float(np.mean(steps))))
    return dataclasses.replace(cfg, max_steps=mean, early_stopping_patience=0), steps
