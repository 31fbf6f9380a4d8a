"""Training step: each model in `params.models` on the hold-out split or on every k-fold fold.

Every model ends as a `Predictions` (validation and test probabilities) in the run folder and a
metrics entry, so thresholds and the submission never care which model made them. A model whose
predictions already exist is not trained again (a rerun continues where the last one stopped).
With `seeds` each fit is one per seed, averaged (kit.models.seeds); with `cv.refit` each model is
fitted once more on all rows after its folds (kit.steps.refit).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from kit.config.loading import deep_merge
from kit.core.progress import progress_stage, show_progress
from kit.core.run_state import BestModel, FoldScore, ModelReport
from kit.core.rundir import RunDir
from kit.data.competition import Competition
from kit.data.folds import Fold, load_or_make_folds
from kit.errors import KitError
from kit.evaluation import metrics
from kit.models.fit import fit_model
from kit.models.kinds import BLENDS, get_kind
from kit.models.oof import FoldPredictions, assemble, load_fold, save_fold
from kit.models.seeds import fit_seeds, seed_scores
from kit.steps.refit import train_refits
from kit.tracking import Tracker, open_tracker

log = logging.getLogger(__name__)
FoldHook = Callable[[str, int, float], None]  # (model kind, fit number, its score)


def train_models(run: RunDir, comp: Competition, callbacks: list | None = None,
                 on_fold: FoldHook | None = None) -> pd.DataFrame:
    """Train every model in params on every fold (skipping finished fits); return the table.

    `cv.folds` 1 trains each model once on the hold-out split; k >= 2 trains it k times (times
    `cv.repeats`), each fit scored on its held-out fold, and the model's validation rows become
    its out-of-fold predictions of every training row. A kind with `seeds` fits each fold once
    per seed and averages them. `cv.refit` then fits each model on all rows (model
    `<kind>_full`). With `ensemble.enabled` the blend of all models (weights fitted on those
    predictions) follows as model `ensemble`.

    `callbacks` (TrainerCallbacks) watch each transformer fit; `on_fold(kind, n, score)` hears
    each fit's score as it ends (a search prunes a trial there).
    """
    params = run.params
    folds = load_or_make_folds(run, comp)
    if folds[0].is_holdout:
        log.info("Split: %d train / %d validation rows (seed %d).", len(folds[0].train_rows),
                 len(folds[0].val_rows), params.seed)
    else:
        log.info("%d-fold cross-validation x %d repeat(s): %d fits per model (seed %d).",
                 params.cv.folds, params.cv.repeats, len(folds), params.seed)
    metric = params.competition.metric
    tracker = open_tracker(run)  # MLflow when installed (tracking params); never stops a run
    for kind in params.models:
        if (run.predictions / f"{kind}.npz").exists() and kind in run.state().models:
            log.info(f"{kind}: already trained in this run; reusing its predictions.")
            continue
        start = time.time()
        fits, extra = [], {}
        for n, fold in enumerate(folds):
            fits.append(_fit_fold(run, comp, kind, fold, len(folds), tracker, extra, callbacks))
            if on_fold is not None and not fold.is_holdout:
                on_fold(kind, n, run.state().folds[kind][fold.tag].score)
        preds = assemble(kind, comp, fits)
        if not folds[0].is_holdout:  # a kind's own step after its folds (merged fold models)
            extra.update(getattr(get_kind(kind), "after_folds", _no_step)(run, comp,
                                                                         preds.test_probs))
        run.save_predictions(preds)
        rep = metrics.report(comp.y[comp.train_rows(preds.val_ids)], preds.val_probs, None,
                             comp.task, metric)
        spread = _fold_summary(run, kind, folds)
        seconds = round(time.time() - start, 1)
        extra.update(seed_scores(run, comp, kind, folds))  # each seed's own, with `seeds`
        run.update_state(models={kind: ModelReport(scores=dict(rep), train_seconds=seconds,
                                                   details=extra, **spread)})
        rep.update(spread)
        rep["train_seconds"] = seconds
        spread = f" (folds {rep['cv_mean']:.4f} ± {rep['cv_std']:.4f})" if "cv_mean" in rep else ""
        what = "validation" if folds[0].is_holdout else "OOF"
        show_progress(log, f"{kind}: {what} {metric} = {rep[metric]:.4f}{spread} "
                           f"({rep['train_seconds']} s)")
        tracker.log_metrics({f"{kind}/{'' if name.endswith('seconds') else 'val_'}{name}": value
                             for name, value in rep.items() if not isinstance(value, dict)})
    if params.cv.refit:  # each model once more on all rows: model `<kind>_full`
        train_refits(run, comp, lambda kind, fold: fit_model(kind, run, comp, fold, tracker,
                                                             callbacks))
    for blend in BLENDS.values():  # the ensemble, when its params section is enabled
        if getattr(params, blend.params_section).enabled:
            score = blend.fit_run(run, comp, tracker)
            tracker.log_metrics({f"{blend.name}/val_{metric}": score})
    run.record_resources("train")  # peak RSS and cache hits, in env.json
    return summarize(run)


def _no_step(run: RunDir, comp: Competition, test_probs: np.ndarray) -> dict:
    return {}


def _fit_fold(run: RunDir, comp: Competition, kind: str, fold: Fold, n_fits: int,
              tracker: Tracker, extra: dict, callbacks: list | None) -> FoldPredictions:
    """One fit of `kind`, or its saved probabilities when it finished in an earlier session."""
    done = None if fold.is_holdout else load_fold(run, kind, fold)
    if done is not None:
        log.info(f"{kind} fold {fold.tag}: finished earlier; reusing its predictions.")
        return done
    label = kind if fold.is_holdout else f"{kind} fold {_nth(run, fold)}/{n_fits}"
    show_progress(log, f"{label}: training started")
    started = time.time()
    with progress_stage(kind if fold.is_holdout else label):
        val_probs, test_probs, fit_extra = fit_seeds(  # once per seed of `seeds`, averaged
            run, comp, kind, fold, lambda f: fit_model(kind, run, comp, f, tracker, callbacks))
    deep_merge(extra, fit_extra)  # per-fold entries (e.g. view_scores by fold) add up
    if not fold.is_holdout:
        save_fold(run, kind, fold, val_probs, test_probs)
        score = metrics.report(comp.y[fold.val_rows], val_probs, None, comp.task,
                               run.params.competition.metric)[run.params.competition.metric]
        run.update_state(folds={kind: {fold.tag: FoldScore(
            run.params.competition.metric, float(score), round(time.time() - started, 1),
            len(fold.val_rows))}})
        show_progress(log, f"{label}: {run.params.competition.metric} = {score:.4f}")
    return FoldPredictions(fold, val_probs, test_probs)


def _nth(run: RunDir, fold: Fold) -> int:
    return fold.repeat * run.params.cv.folds + fold.fold + 1


def _fold_summary(run: RunDir, kind: str, folds: list[Fold]) -> dict:
    """Mean and std of the per-fold scores (k-fold only), from the run state's fold scores."""
    if folds[0].is_holdout:
        return {}
    per_fold = run.state().folds.get(kind, {})
    scores = [per_fold[f.tag].score for f in folds if f.tag in per_fold]
    return {"cv_mean": float(np.mean(scores)), "cv_std": float(np.std(scores)),
            "folds": len(scores)}


def summarize(run: RunDir) -> pd.DataFrame:
    """Validation table of the trained models; records the best one in the run state."""
    state = run.state()
    metric = run.params.competition.metric
    table = pd.DataFrame({kind: report.row() for kind, report in state.models.items()}).T
    # weights, member scores: per-model details that belong in metrics.json, not the table
    table = table[[c for c in table.columns
                   if not table[c].map(lambda v: isinstance(v, (dict, list))).any()]]
    if table.empty:
        raise KitError("No model has been trained in this run yet; run 02_train first.")
    greater = metrics.get_metric(metric).greater_is_better
    best = table[metric].astype(float).idxmax() if greater else table[metric].astype(float).idxmin()
    run.update_state(best=BestModel(best, metric, float(table.loc[best, metric])))
    return table


def training_curves(run: RunDir) -> object:
    """The transformer's loss/metric curves (PNG) for the notebook, or a note if there are none."""
    found = sorted(run.path.rglob("training_curves*.png"))
    if not found:
        return "No training curves: only models without a training loop ran (e.g. tfidf)."
    from IPython.display import Image

    return Image(filename=str(found[-1]))


def cv_summary(run: RunDir) -> pd.DataFrame | str:
    """Per-fold scores of each model (k-fold), with mean ± std, and the ensemble's weights.

    With `seeds`, each seed of a model has its column (`transformer s43`: its fold scores and its
    own OOF) beside the model's (their mean); a refit `<kind>_full` has only its OOF, which is
    its kind's (row `OOF from`). A hold-out run with seeds shows each seed's validation score.
    """
    state = run.state()
    metric = state.best.metric if state.best else run.params.competition.metric
    models = state.models
    seeds = {kind: r.details.get("seed_scores") for kind, r in models.items()
             if r.details.get("seed_scores")}
    if not state.folds:
        if seeds:
            return pd.DataFrame({kind: {**{f"s{s}": v for s, v in scores.items()},
                                        "seed mean": state.model_score(kind, metric)}
                                 for kind, scores in seeds.items()}).round(4)
        return "Hold-out validation (cv.folds: 1): one fit per model, no folds to show."
    columns: dict[str, dict[str, float]] = {}
    oof: dict[str, float | None] = {}
    for kind, fits in state.folds.items():
        columns[kind], oof[kind] = {}, state.model_score(kind, metric)
        for key in sorted(fits, key=lambda k: int(k.partition("/s")[2] or -1)):
            tag, _, seed = key.partition("/s")  # "r0_f2", or one seed's fit of it "r0_f2/s43"
            column = f"{kind} s{seed}" if seed else kind
            columns.setdefault(column, {})[tag] = fits[key].score
            oof[column] = seeds.get(kind, {}).get(seed) if seed else oof[kind]
    refits = {name: r.details["oof_from"] for name, r in models.items()
              if r.details.get("oof_from")}
    table = pd.DataFrame(columns, columns=[*columns, *refits], dtype=float)
    table.loc["mean"] = table.mean()
    table.loc["std"] = table.iloc[:-1].std(ddof=0)
    table.loc["OOF"] = [state.model_score(c, metric) if c in refits else oof[c]
                        for c in table.columns]
    for name in BLENDS:  # a blend's weight of each model
        weights = state.models[name].details.get("weights") if name in state.models else None
        if weights:
            table.loc[f"{name} weight"] = [weights.get(kind) for kind in table.columns]
    table = table.round(4)
    if refits:  # a refit has no OOF of its own: say whose stands in for it
        table.loc["OOF from"] = [f"{refits[c]}'s (stand-in)" if c in refits else "own"
                                 for c in table.columns]
    return table
