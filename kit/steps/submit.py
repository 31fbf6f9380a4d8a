"""Submission step: apply the decision rule to the test predictions, validate, save, score, send.

Submitting is a dry run (the exact `kaggle` command is printed) until `submit.enabled: true`.
Every attempt, dry or real, is logged in outputs/submissions.csv with the file's sha256 and the
local public/private scores when the competition has an answer key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kit.core.run_state import SubmissionRecord
from kit.core.rundir import RunDir, run_path
from kit.data.competition import Competition
from kit.errors import KitError
from kit.evaluation import metrics
from kit.evaluation.rule_store import chosen_model, load_rule
from kit.evaluation.thresholds import DecisionRule
from kit.kaggle import cli as kaggle_cli
from kit.submission.build import build_submission, score_local, validate_submission
from kit.submission.store import log_submission, read_log, save_submission
from kit.tracking import track_submission


@dataclass
class SubmissionResult:
    """What 04_submit shows: the file, its local scores and what Kaggle (or the dry run) said."""

    submission: pd.DataFrame
    file: Path
    scores: dict[str, Any]  # local_public, local_private, their gap, the untuned rule's
    command: str  # the kaggle command, shell-quoted (no secrets)
    answer: str  # Kaggle's answer, or the dry-run note
    rule: DecisionRule


def make_submission(run: RunDir, comp: Competition) -> SubmissionResult:
    """Build, validate, save, score and (dry-run) submit; returns what 04_submit shows."""
    params = run.params
    model = chosen_model(run)
    preds = run.load_predictions(model)
    if not np.array_equal(preds.test_ids, comp.test_ids):
        raise KitError(
            f"The test ids saved with model {model!r} differ from {comp.folder}/"
            f"{params.competition.test_file}: the data changed since training. Retrain in a "
            "new run."
        )
    rule = load_rule(run, comp.task, comp.labels)
    pred = rule.apply(preds.test_probs)
    probs = rule.probabilities(preds.test_probs)
    delimiter = params.competition.label_delimiter
    sub = build_submission(comp, pred, probs, params.submit.prediction, delimiter)
    validate_submission(sub, comp, params.submit.prediction, delimiter)
    path = save_submission(sub, run.path)

    metric = params.competition.metric
    scores = score_local(sub, comp, metric, delimiter)
    if scores and rule.kind != "argmax":
        # For the record only (never used to choose anything): what the untuned rule scores.
        default = build_submission(comp, metrics.default_predictions(preds.test_probs, comp.task),
                                   preds.test_probs, "label", delimiter)
        scores["default_rule"] = score_local(default, comp, metric, delimiter)
    decision = run.state().decision
    validation = decision.validation_rule if decision else None
    message = params.submit.message or (
        f"{params.name} {model}" + (f" val {metric}={validation:.4f}" if validation else ""))
    try:
        result = kaggle_cli.submit(comp.slug, path, message, dry_run=not params.submit.enabled,
                                   kernel=params.submit.kernel,
                                   version=params.submit.kernel_version)
        ok, answer = result.ok, result.answer
        command = result.command
        if result.dry_run:  # the switch a notebook user has is the params key, not an argument
            answer = ("dry run: not sent to Kaggle (set submit.enabled: true in the params, or "
                      "overrides={\"submit.enabled\": True}, to submit)")
    except kaggle_cli.SubmitError as err:
        ok, answer, command = False, err.result.answer, err.result.command
        _log(run, path, message, model, scores, validation, answer, ok, dry_run=False)
        raise
    _log(run, path, message, model, scores, validation, answer, ok, not params.submit.enabled)
    run.update_state(submission=SubmissionRecord(
        file=str(path.relative_to(run.path)), model=model, rule=rule.kind, command=command,
        kaggle_answer=answer,
        local={k: v for k, v in scores.items() if k.startswith("local_") or k.endswith("_gap")},
    ))
    track_submission(run, model)  # MLflow: the run folder's files, the best model registered
    run.record_resources("submit")
    return SubmissionResult(sub, path, scores, command, answer, rule)


def _log(run: RunDir, path: Path, message: str, model: str, scores: dict[str, float],
         validation: float | None, answer: str, ok: bool, dry_run: bool) -> None:
    log_submission(
        run_path(run.params, run.root).parent / "submissions.csv",
        run=run.params.name, file=path, message=message, model=model,
        local_public=scores.get("local_public"), local_private=scores.get("local_private"),
        validation=validation, kaggle_answer=answer, ok=ok, dry_run=dry_run,
    )


def submission_log(run: RunDir) -> pd.DataFrame:
    """Every submission attempt of every run (outputs/submissions.csv), newest last."""
    return read_log(run_path(run.params, run.root).parent / "submissions.csv")
