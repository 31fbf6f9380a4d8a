"""Training on Kaggle across sessions: push 02_train with a time budget, continue it, pull it back.

`python -m kit push RUN --notebook 02_train` pushes training as a GPU batch notebook (internet on:
only a code competition's scoring notebook must be offline) with
`transformer.time_budget_minutes` baked in from `kaggle.time_limit_hours`, less a margin for the
checkpoint, the predictions and the output upload. A session that runs out of budget saves a
checkpoint and stops; `--continue` pushes the next version with the previous version's output
attached (`kernel_sources`), and the new session copies that run folder from
/kaggle/input/<kernel-slug>/outputs/<run> into /kaggle/working before it starts, so training
resumes from its latest complete checkpoint and finished models and folds are kept
(kit.models.hf.resume). `python -m kit pull RUN` brings the finished run folder back.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kit.config.compete import run_models
from kit.config.params import Params
from kit.core.run_state import METRICS_FILE, STATE_FILE, RunState
from kit.errors import KitError
from kit.kaggle.kernels import fetch_output, log_tail
from kit.kaggle.package import load_state, run_params, save_state
from kit.kaggle.push import PushResult, push_run

log = logging.getLogger(__name__)

TRAIN_NOTEBOOK = "02_train"
# What a pull leaves as it is in the local run folder: this machine's params (the Kaggle session
# ran them with Kaggle's folders and a time budget baked in) and what it sent to Kaggle.
KEPT_LOCAL = ("params.yaml", "kaggle.json", "kaggle_output", "kaggle_training")


def budget_minutes(time_limit_hours: float) -> float:
    """The training time budget for a session limit: 10 % of it kept back, 2 to 30 minutes."""
    limit = time_limit_hours * 60
    return round(limit - min(30.0, max(2.0, 0.1 * limit)), 2)


def training_overrides(params: Params) -> dict[str, Any]:
    """The params a training session on Kaggle runs with on top of the run's own."""
    return {"transformer.time_budget_minutes": budget_minutes(params.kaggle.time_limit_hours)}


@dataclass
class TrainingSession:
    """One pushed training session: the push, whether training is finished, what to do next."""

    push: PushResult
    session: int
    finished: bool
    run_output: Path | None  # the session's run folder as fetched (kaggle_training/vN/...)
    message: str


def push_training(
    run_folder: str | Path, out: str | Path, *, resume: bool = False, dry_run: bool = True,
    env: Mapping[str, str] | None = None, poll_seconds: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
) -> TrainingSession:
    """Push one training session of `run_folder` (`resume`: continue the previous one)."""
    run_folder = Path(run_folder).resolve()
    params = run_params(run_folder)
    state = load_state(run_folder)
    training = state.get("training", {})
    sessions = training.get("sessions", [])
    sources: list[str] = []
    if resume:
        if not sessions and not dry_run:
            raise KitError(f"{run_folder} has no earlier training session on Kaggle to continue "
                           f"(its kaggle.json records none). Fix: push the first session with "
                           f"`python -m kit push {run_folder} --out DIR --notebook 02_train`.")
        if sessions and sessions[-1].get("finished"):
            raise KitError(f"Training of {run_folder.name} finished in session "
                           f"{len(sessions)}; nothing to continue. Fix: `python -m kit pull "
                           f"{run_folder}` brings the run folder back.")
        sources = [training.get("ref") or "<owner>/<previous training notebook>"]
    elif sessions and not dry_run:
        log.warning("%s was trained on Kaggle before (%d session(s)); this push starts over. "
                    "Use --continue to go on from the last one.", run_folder, len(sessions))
    latest = run_folder / "kaggle_training" / "latest"
    if not dry_run:
        shutil.rmtree(latest, ignore_errors=True)
    result = push_run(run_folder, out, notebook=TRAIN_NOTEBOOK, dry_run=dry_run, env=env,
                      poll_seconds=poll_seconds, sleep=sleep,
                      overrides=training_overrides(params), kernel_sources=sources,
                      allow_failed=True, output_dir=latest)
    number = len(sessions) + 1 if resume else 1
    if dry_run:
        return TrainingSession(result, number, False, None, "dry run: nothing sent")
    output = run_folder / "kaggle_training" / f"v{result.version}"
    shutil.rmtree(output, ignore_errors=True)
    latest.rename(output)  # each version's files apart (kaggle_training/vN)
    run_output = output / "outputs" / params.name
    finished = trained_everything(run_output, params)
    stopped = not finished and _resumable(run_output)
    if not finished and not stopped:
        raise KitError(f"Kaggle training notebook {result.ref} (version {result.version}) ended "
                       f"{result.status} without a checkpoint to continue from. The end of its "
                       f"log:\n{log_tail(output, result.ref)}\nFix: read the whole log at "
                       f"https://www.kaggle.com/code/{result.ref}/log, fix the cause, push again.")
    record = {"version": result.version, "status": result.status, "finished": finished,
              "steps": checkpoint_steps(run_output)}
    state = load_state(run_folder)
    kept = state.get("training", {}).get("sessions", []) if resume else []
    state["training"] = {"ref": result.ref, "sessions": [*kept, record]}
    save_state(run_folder, state)
    if finished:
        message = (f"Training finished in session {number} (version {result.version}). Bring "
                   f"the run folder back with `python -m kit pull {run_folder}`.")
    else:
        message = (f"Session {number} (version {result.version}) stopped before the end "
                   f"(checkpoints at steps {record['steps']}). Continue with `python -m kit push "
                   f"{run_folder} --out {out} --notebook 02_train --continue`.")
    log.info(message)
    return TrainingSession(result, number, finished, run_output, message)


def pull_run(run_folder: str | Path, *, env: Mapping[str, str] | None = None) -> Path:
    """Fetch the training notebook's latest output and copy its run folder over `run_folder`.

    This machine's params.yaml and kaggle.json stay; everything the session wrote (models,
    predictions, metrics, checkpoints) replaces what is here, so 03/04/package run locally.
    """
    run_folder = Path(run_folder).resolve()
    params = run_params(run_folder)
    training = load_state(run_folder).get("training", {})
    ref = training.get("ref")
    if not ref:
        raise KitError(f"{run_folder} was not trained on Kaggle (its kaggle.json records no "
                       "training notebook). Fix: `python -m kit push RUN --out DIR --notebook "
                       "02_train` first.")
    fetched = run_folder / "kaggle_training" / "pulled"
    shutil.rmtree(fetched, ignore_errors=True)
    fetch_output(ref, fetched, f"https://www.kaggle.com/code/{ref}", env)
    source = fetched / "outputs" / params.name
    if not trained_everything(source, params):
        raise KitError(f"The latest output of {ref} holds no finished training of "
                       f"{params.name} (models {params.models}). Fix: continue it with `python "
                       f"-m kit push {run_folder} --out DIR --notebook 02_train --continue` and "
                       "pull once a session says it finished.")
    if not (source / STATE_FILE).is_file():  # trained by a kit from before run_state.json:
        (run_folder / STATE_FILE).unlink(missing_ok=True)  # its metrics.json is the record
    for item in sorted(source.iterdir()):
        if item.name in KEPT_LOCAL:
            continue
        dest = run_folder / item.name
        if dest.is_dir():
            shutil.rmtree(dest)
        if item.is_dir():
            shutil.copytree(item, dest)
        else:
            shutil.copy2(item, dest)
    log.info("Pulled %s from %s into %s.", params.name, ref, run_folder)
    return run_folder


def trained_everything(run_dir: Path, params: Params) -> bool:
    """Whether `run_dir` holds every model of `params.models` (and their refits, `cv.refit`)
    trained (metrics and predictions)."""
    if not (run_dir / METRICS_FILE).is_file() and not (run_dir / STATE_FILE).is_file():
        return False
    trained = RunState.read(run_dir).models
    return all(kind in trained and (run_dir / "predictions" / f"{kind}.npz").is_file()
               for kind in run_models(params.models, params.cv))


def checkpoint_steps(run_dir: Path) -> list[int]:
    """The steps of the complete checkpoints under `run_dir` (every model and fold)."""
    from kit.models.hf.checkpoints import checkpoint_step, complete_checkpoints

    roots = {p.parent for p in run_dir.rglob("checkpoint-*") if p.is_dir()}
    steps = (checkpoint_step(c) for root in roots for c in complete_checkpoints(root))
    return sorted(s for s in steps if s is not None)


def _resumable(run_dir: Path) -> bool:
    return run_dir.is_dir() and bool(checkpoint_steps(run_dir) or
                                     (run_dir / METRICS_FILE).is_file()
                                     or (run_dir / STATE_FILE).is_file())
