"""Run a search: an Optuna study in a sqlite file, one run folder per trial, resumable.

Each trial is a run named `<name>-t007` with the trial's values as params overrides; its score is
the run's best CV score (OOF with `cv.folds` >= 2, else validation). The study lives in
`outputs/<name>-search/study.db` (or `search.storage`, an RDB URL several machines share). A
killed search resumes: finished and pruned trials are kept, and a trial that was running when
the session died is queued again under its own run name, so its run folder (finished folds,
transformer checkpoints) continues where it stopped. Pruning: every fold's score (k-fold), or
every evaluation of a hold-out transformer fit, is reported to Optuna's median pruner.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from kit.config.params import Params
from kit.core.atomic import write_atomic
from kit.core.progress import show_progress
from kit.core.rundir import resolve_params, run_path
from kit.errors import KitError
from kit.evaluation.metrics import get_metric
from kit.search.space import check_space, planned_trials, suggest

log = logging.getLogger(__name__)
RUN_NAME = "run_name"  # trial user attribute: the trial's run folder name
INTERRUPTED = "interrupted"  # user attribute of a trial whose process died; a copy reran it


@dataclass
class SearchResult:
    """The trials table (one row per trial) and where the search lives."""

    table: pd.DataFrame
    folder: Path
    best_run: str | None
    best_value: float | None


def run_search(params_path: str, overrides: dict[str, Any] | None = None,
               root: Path | None = None, trials: int | None = None) -> SearchResult:
    """Run (or resume) the search declared in the params file's `search` section."""
    import optuna

    params, root = resolve_params(params_path, overrides=overrides, root=root)
    cfg = params.search

    def load(point: dict[str, Any]) -> Params:
        return resolve_params(params_path, overrides={**(overrides or {}), **point},
                              root=root)[0]

    check_space(params_path, cfg, load)
    folder = run_path(params, root).with_name(f"{params.name}-search")
    folder.mkdir(parents=True, exist_ok=True)
    storage: Any = cfg.storage or f"sqlite:///{folder / 'study.db'}"
    if cfg.storage:  # shared by machines: a trial whose heartbeat stops is failed and retried
        storage = optuna.storages.RDBStorage(
            cfg.storage, heartbeat_interval=60, grace_period=300,
            failed_trial_callback=optuna.storages.RetryFailedTrialCallback(max_retry=3))
    greater = get_metric(params.competition.metric).greater_is_better
    sampler = (optuna.samplers.GridSampler({k: list(v) for k, v in cfg.grid.items()},
                                           seed=params.seed)
               if cfg.method == "grid" else optuna.samplers.TPESampler(seed=params.seed))
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1) if cfg.prune
              else optuna.pruners.NopPruner())
    study = optuna.create_study(study_name=params.name, storage=storage, sampler=sampler,
                                pruner=pruner, load_if_exists=True,
                                direction="maximize" if greater else "minimize")
    _requeue_interrupted(study)
    total = trials or planned_trials(cfg)
    done = [t for t in study.trials if _counts_as_done(t)]
    left = max(0, total - len(done))
    log.info(f"Search {params.name!r} ({cfg.method}): {len(done)} of {total} trials done, "
             f"{left} to run; study in {cfg.storage or folder / 'study.db'}")

    def objective(trial: optuna.Trial) -> float:
        return _run_trial(trial, params_path, overrides or {}, params, cfg, root, total)

    if left:
        study.optimize(objective, n_trials=left, catch=())
    return _summary(study, folder, params)


def _requeue_interrupted(study: Any) -> None:
    """Trials of this machine left RUNNING by a dead process: failed, and queued again as they were.

    A trial records its host and pid; one whose process is gone on this host was killed with its
    session. (Trials of other machines sharing an RDB storage are left to Optuna's heartbeat.)
    The copy keeps the trial's values, run name and grid point (as Optuna's own
    RetryFailedTrialCallback copies a stale trial), so the grid stays exact and the run folder
    continues.
    """
    import optuna

    storage = study._storage  # Optuna's retry callback works at this level too
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.user_attrs.get("host") != socket.gethostname() or _alive(t.user_attrs.get("pid")):
            continue
        storage.set_trial_user_attr(t._trial_id, INTERRUPTED, True)
        storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
        study.add_trial(optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING, params=t.params, distributions=t.distributions,
            user_attrs={RUN_NAME: t.user_attrs.get(RUN_NAME), "resumed_from_trial": t.number},
            system_attrs=dict(t.system_attrs)))
        log.info(f"Trial {t.number} was interrupted; it is queued again and continues in its "
                 f"run folder {t.user_attrs.get(RUN_NAME)!r}.")


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _counts_as_done(t: Any) -> bool:
    """Finished trials, except the interrupted ones (their copy runs instead)."""
    return t.state.is_finished() and not t.user_attrs.get(INTERRUPTED)


def _run_trial(trial: Any, params_path: str, overrides: dict[str, Any], params: Params,
               cfg: Any, root: Path, total: int) -> float:
    import optuna

    from kit.core.rundir import open_run
    from kit.data.competition import load_competition
    from kit.steps.train import train_models

    values = suggest(trial, cfg)
    name = trial.user_attrs.get(RUN_NAME) or f"{params.name}-t{trial.number:03d}"
    trial.set_user_attr(RUN_NAME, name)
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())
    show_progress(log, f"search trial {trial.number + 1}/{total} ({name}): {values}")
    run = open_run(params_path, name, {**overrides, **values}, root)
    comp = load_competition(run.params, run.root)
    metric = params.competition.metric

    def on_fold(kind: str, n: int, score: float) -> None:
        trial.report(score, step=n)
        if trial.should_prune():
            raise optuna.TrialPruned(f"{kind} fold {n}: {metric} {score:.4f}")

    callbacks = []
    if run.params.cv.folds == 1:  # step-level pruning of the fits that have a Trainer loop
        from kit.search.pruning import PruningCallback

        callbacks.append(PruningCallback(trial, metric))
    table = train_models(run, comp, callbacks=callbacks, on_fold=on_fold)
    best = run.state().best
    if best is None:
        raise KitError(f"Search trial {name!r}: training recorded no best model in {run.path}.")
    value = best.validation
    trial.set_user_attr("model", best.model)
    show_progress(log, f"search trial {trial.number + 1}/{total} ({name}): {metric} = "
                       f"{value:.4f} ({table.index.tolist()})")
    return value


def _summary(study: Any, folder: Path, params: Params) -> SearchResult:
    rows = []
    for t in study.trials:
        rows.append({"trial": t.number, "state": t.state.name, "value": t.value,
                     "run": t.user_attrs.get(RUN_NAME), "model": t.user_attrs.get("model"),
                     **{f"param:{k}": v for k, v in t.params.items()}})
    table = pd.DataFrame(rows)
    write_atomic(folder / "trials.csv", table.to_csv(index=False))
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    if not complete:
        raise KitError(f"Search {params.name!r}: no trial completed (see {folder}/trials.csv).")
    best = study.best_trial
    return SearchResult(table, folder, best.user_attrs.get(RUN_NAME), best.value)
