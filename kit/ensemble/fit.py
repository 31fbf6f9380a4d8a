"""Fit an ensemble on the members' OOF predictions and save it as the run's model `ensemble`.

The fit is `models/ensemble/ensemble.json` (weights, or the stack's coefficients); runs written
before kept it at the run folder's top, where `read_ensemble` still finds it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kit.core.atomic import write_json
from kit.core.progress import show_progress
from kit.core.run_state import ModelReport
from kit.core.rundir import Predictions, RunDir
from kit.data.competition import Competition
from kit.ensemble.blend import Blend, combine, fit_weights, to_ranks
from kit.ensemble.members import ENSEMBLE, collect_members, share_with_refits
from kit.ensemble.stack import fit_stack
from kit.errors import KitError
from kit.evaluation import metrics

log = logging.getLogger(__name__)
ENSEMBLE_FILE = "ensemble.json"


@dataclass
class EnsembleResult:
    """The fitted blend: weights per member, each member's score and the blend's."""

    weights: dict[str, float]
    member_scores: dict[str, float]
    score: float
    method: str


def fit_ensemble(run: RunDir, comp: Competition) -> EnsembleResult:
    """Fit weights on the shared OOF rows; save predictions/ensemble.npz and
    models/ensemble/ensemble.json."""
    cfg = run.params.ensemble
    metric_name = run.params.competition.metric
    metric = metrics.get_metric(metric_name)
    if cfg.rank and metric.needs == "probs":
        raise KitError(f"`ensemble.rank` blends ranks, which are not probabilities, but "
                       f"`competition.metric` {metric_name!r} scores probabilities. Set "
                       "ensemble.rank: false.")
    members, val_ids, test_ids = collect_members(run)
    row_of = {v: i for i, v in enumerate(map(str, comp.train_ids.tolist()))}
    y = comp.y[np.array([row_of[v] for v in map(str, val_ids.tolist())])]
    sign = 1.0 if metric.greater_is_better else -1.0

    def score(probs: np.ndarray) -> float:
        return sign * metrics.score(metric_name, y, probs, None, comp.task)

    def surrogate(probs: np.ndarray) -> float:  # log loss (per-label BCE for multilabel)
        p = np.clip(probs, 1e-7, 1 - 1e-7)
        if comp.task == "multilabel":
            return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
        return float(-np.mean(np.log(p[np.arange(len(y)), y])))

    normalize = comp.task != "multilabel"
    val_stack = np.stack([m.val_probs for m in members])
    test_stack = np.stack([m.test_probs for m in members])
    if cfg.rank:
        val_stack = np.stack([to_ranks(p) for p in val_stack])
        test_stack = np.stack([to_ranks(p) for p in test_stack])
    blend: Blend = fit_weights(val_stack, score, surrogate,
                               "hill_climb" if cfg.method == "stack" else cfg.method,
                               cfg.iterations, normalize)
    blend.weights = share_with_refits([m.name for m in members], blend.weights)
    val = combine(val_stack, blend.weights, normalize)
    test = combine(test_stack, blend.weights, normalize)
    weights = {m.name: round(float(w), 6) for m, w in zip(members, blend.weights, strict=True)}
    extra: dict = {}
    compared: dict[str, float] = {}
    if cfg.method == "stack":  # the level-2 model, compared with hill climbing on the same rows
        stacked = fit_stack(val_stack, test_stack, y, _oof_folds(run, val_ids, y),
                            comp.task, cfg.stack_c, run.params.seed)
        compared = {f"hill_climb_{metric_name}": sign * blend.score,
                    f"stack_{metric_name}": sign * score(stacked.oof)}
        if score(stacked.oof) >= blend.score:  # honest OOF on both sides: keep the better one
            blend = Blend(np.full(len(members), 1 / len(members)), score(stacked.oof), "stack")
            val, test = stacked.oof, stacked.test
            weights = {m.name: round(1 / len(members), 6) for m in members}  # all feed it
            extra = {"stack": {"models": stacked.models, "c": cfg.stack_c}}
    run.save_predictions(Predictions(ENSEMBLE, val_ids, val, test_ids, test))
    result = EnsembleResult(
        weights=weights,
        member_scores={m.name: sign * score(p) for m, p in zip(members, val_stack, strict=True)},
        score=sign * blend.score, method=blend.method)
    write_json(ensemble_file(run.path), {**vars(result), "metric": metric_name,
                                          "rank": cfg.rank, "rows": len(val_ids), **extra})
    rep = metrics.report(y, val, None, comp.task, metric_name)
    run.update_state(models={ENSEMBLE: ModelReport(
        scores={**rep, **compared}, **_per_fold(run, comp, val_ids, y, val, metric_name),
        details={"weights": result.weights, "member_scores": result.member_scores,
                 "method": result.method})})
    best_member = max(result.member_scores.items(), key=lambda kv: sign * kv[1])
    show_progress(log, f"ensemble ({result.method}): {metric_name} = {result.score:.4f} on "
                       f"{len(val_ids)} rows; best member {best_member[0]} {best_member[1]:.4f}; "
                       "weights " + ", ".join(f"{k} {v:.2f}" for k, v in result.weights.items()))
    return result


def ensemble_file(run_folder: Path) -> Path:
    """Where a run's fitted ensemble is written: models/ensemble/ensemble.json."""
    return Path(run_folder) / "models" / ENSEMBLE / ENSEMBLE_FILE


def read_ensemble(run_folder: Path) -> dict[str, Any] | None:
    """The fitted ensemble of the run in `run_folder` (None if it has none); a run written
    before models/ensemble/ keeps it at its top."""
    for path in (ensemble_file(run_folder), Path(run_folder) / ENSEMBLE_FILE):
        if path.is_file():
            return json.loads(path.read_text())
    return None


def _saved_folds(run: RunDir, val_ids: np.ndarray) -> np.ndarray | None:
    """The run's fold of each OOF row (folds.json, first repeat), or None when the run has no
    folds or a row is not in them (members from runs with other folds)."""
    from kit.data.folds import FOLDS_FILE

    path = run.path / FOLDS_FILE
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    fold_of = dict(zip(saved["ids"], saved["fold_of"][0], strict=True))
    folds = np.array([fold_of.get(str(v), -1) for v in val_ids.tolist()])
    return None if (folds < 0).any() else folds


def _oof_folds(run: RunDir, val_ids: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The run's folds of the OOF rows; a hold-out run's validation rows, or members from runs
    with other folds, get 5 seeded folds (stratified for single-label rows) instead."""
    from kit.evaluation.rule_guard import seeded_folds

    folds = _saved_folds(run, val_ids)
    return seeded_folds(y, 5, run.params.seed) if folds is None else folds


def _per_fold(run: RunDir, comp: Competition, val_ids: np.ndarray, y: np.ndarray,
              probs: np.ndarray, metric_name: str) -> dict:
    """The blend's score on each fold's OOF rows (first repeat), as the members report theirs."""
    folds = _saved_folds(run, val_ids)
    if folds is None:  # a hold-out run, or members from runs with other folds
        return {}
    scores = [metrics.score(metric_name, y[folds == k], probs[folds == k], None, comp.task)
              for k in np.unique(folds)]
    return {"cv_mean": float(np.mean(scores)), "cv_std": float(np.std(scores)),
            "folds": len(scores)}
