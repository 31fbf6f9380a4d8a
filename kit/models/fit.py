"""Fit one model kind on one fold's training rows; return its fold and test probabilities.

The training step and the k-fold loop call `fit_model` per fold and never care which model it
was; each kind's fit lives in its own module, found through the registry (kit.models.kinds).
"""

from __future__ import annotations

from kit.core.rundir import RunDir
from kit.data.competition import Competition
from kit.data.folds import Fold
from kit.models.kinds import FitOutput, fold_kind
from kit.models.kinds.base import model_dir, persistent_checkpoint_dir
from kit.tracking import Tracker

__all__ = ["fit_model", "model_dir", "persistent_checkpoint_dir"]


def fit_model(kind: str, run: RunDir, comp: Competition, fold: Fold, tracker: Tracker,
              callbacks: list | None = None) -> FitOutput:
    """Train `kind` on `fold.train_rows`; probabilities on `fold.val_rows` and on test.

    `callbacks`: extra TrainerCallbacks for a transformer fit (a search's pruning).
    """
    return fold_kind(kind).fit(run, comp, fold, tracker, callbacks or [])
