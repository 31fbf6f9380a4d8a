"""Submission step: apply the decision rule to the test predictions, validate, save, score, send.

Submitting is a dry run (the exact `kaggle` command is printed) until `submit.enabled: true`.
Every attempt, dry or real, is logged in outputs/submissions.csv with the file's sha256 and the
local public/private scores when the competition has an answer key.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kit import kaggle_cli, metrics
from kit.data import Competition
from kit.decide import RULE_FILE, chosen_model
from kit.errors import KitError
from kit.rundir import RunDir, run_path
from kit.submission import build_submission, score_local, validate_submission
from kit.submission_store import log_submission, save_submission
from kit.thresholds import DecisionRule


def load_rule(run: RunDir, comp: Competition) -> DecisionRule:
    """The rule 03_thresholds saved; the untuned default when thresholds are disabled."""
    path = run.path / RULE_FILE
    if path.exists():
        return DecisionRule.from_json(path)
    if run.params.thresholds.enabled:
        raise KitError(f"No {RULE_FILE} in {run.path}: run 03_thresholds before 04_submit.")
    return DecisionRule.default(comp.task, comp.labels)


def make_submission(run: RunDir, comp: Competition) -> dict[str, object]:
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
    rule = load_rule(run, comp)
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
    validation = run.read_metrics().get("decision", {}).get("validation_rule")
    message = params.submit.message or (
        f"{params.name} {model}" + (f" val {metric}={validation:.4f}" if validation else ""))
    try:
        result = kaggle_cli.submit(comp.slug, path, message, dry_run=not params.submit.enabled,
                                   kernel=params.submit.kernel,
                                   version=params.submit.kernel_version)
        ok, answer = result.ok, result.answer
        command = result.command
    except kaggle_cli.SubmitError as err:
        ok, answer, command = False, err.result.answer, err.result.command
        _log(run, path, message, model, scores, validation, answer, ok, dry_run=False)
        raise
    _log(run, path, message, model, scores, validation, answer, ok, not params.submit.enabled)
    run.update_metrics(
        submission={"file": str(path.relative_to(run.path)), "model": model,
                    "rule": rule.kind, "command": command, "kaggle_answer": answer},
        **{k: v for k, v in scores.items() if k.startswith("local_") or k.endswith("_gap")},
    )
    return {"submission": sub, "file": path, "scores": scores, "command": command,
            "answer": answer, "rule": rule}


def _log(run: RunDir, path: Path, message: str, model: str, scores: dict[str, float],
         validation: float | None, answer: str, ok: bool, dry_run: bool) -> None:
    log_submission(
        run_path(run.params, run.root).parent / "submissions.csv",
        run=run.params.name, file=path, message=message, model=model,
        local_public=scores.get("local_public"), local_private=scores.get("local_private"),
        validation=validation, kaggle_answer=answer, ok=ok, dry_run=dry_run,
    )
