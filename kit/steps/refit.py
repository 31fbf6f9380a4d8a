"""Full-data refit (`cv.refit`): after its k folds, each model fitted once more on every row.

The refit of kind `transformer` is the model `transformer_full`: its own model folder
(models/transformer_full, one per seed with `seeds`), its own test probabilities, a member like
any other for the ensemble, the submission, serving and packaging. It trains as its kind says
for a fold without validation rows (the transformer for the folds' mean best step count,
kit.models.hf.refit; TF-IDF with the same settings).

It has no out-of-fold predictions: no row was held out of it. Its validation probabilities are
its kind's k-fold OOF instead, a stand-in that is what blending and the decision rule (fitted on
those rows) need: the refit's own OOF cannot exist, and the k-fold OOF is the closest
measurement of the same model on unseen rows (a refit trained on more rows should do no worse).
Its score in 02's table is therefore the k-fold model's, marked `oof_from`, and the log says so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from kit.config.compete import refit_name
from kit.core.progress import progress_stage, show_progress
from kit.core.run_state import ModelReport
from kit.core.rundir import Predictions, RunDir
from kit.data.competition import Competition
from kit.data.folds import Fold, refit_fold
from kit.evaluation import metrics
from kit.models.kinds import FitOutput
from kit.models.seeds import fit_seeds

__all__ = ["train_refits"]

log = logging.getLogger(__name__)


def train_refits(run: RunDir, comp: Competition, fit: Callable[[str, Fold], FitOutput]) -> None:
    """`fit(kind, fold)` of each model on all training rows (finished refits are kept), saved as
    predictions/<kind>_full.npz with the kind's OOF as the validation stand-in."""
    metric = run.params.competition.metric
    fold = refit_fold(comp)
    for kind in run.params.models:
        name = refit_name(kind)
        if (run.predictions / f"{name}.npz").exists() and name in run.state().models:
            log.info(f"{name}: already trained in this run; reusing its predictions.")
            continue
        start = time.time()
        show_progress(log, f"{name}: full-data refit of {kind} on all {len(fold.train_rows)} "
                           "training rows started")
        with progress_stage(name):
            _, test_probs, extra = fit_seeds(run, comp, kind, fold, lambda f, k=kind: fit(k, f))
        oof = run.load_predictions(kind)
        run.save_predictions(Predictions(name, oof.val_ids, oof.val_probs, comp.test_ids,
                                         test_probs))
        y = comp.y[comp.train_rows(oof.val_ids)]
        rep = metrics.report(y, oof.val_probs, None, comp.task, metric)
        seconds = round(time.time() - start, 1)
        run.update_state(models={name: ModelReport(scores=dict(rep), train_seconds=seconds,
                                                   details={"oof_from": kind, **extra})})
        show_progress(log, f"{name}: trained on all rows ({seconds} s); no row was held out, so "
                           f"its OOF stand-in is {kind}'s k-fold OOF ({metric} = "
                           f"{rep[metric]:.4f}) for the blend and the decision rule")
