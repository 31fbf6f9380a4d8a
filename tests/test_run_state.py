"""The run state: what 01_eda resolves is recorded in run_state.json and the run's params.yaml."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kit.core.run_state import STATE_FILE, VERSION, RunState
from kit.core.rundir import open_run
from kit.data.competition import load_competition
from kit.errors import KitError
from kit.steps.eda import run_eda


def test_a_state_round_trips_and_an_old_folder_reads_as_empty(tmp_path: Path):
    assert RunState.read(tmp_path) == RunState()  # a run folder from before the file existed
    state = RunState().with_resolved("transformer.max_length", 96, "01_eda: p99")
    state.write(tmp_path)
    again = RunState.read(tmp_path)
    assert again == state and again.resolved["transformer.max_length"].value == 96
    assert json.loads((tmp_path / STATE_FILE).read_text())["version"] == VERSION


def test_a_newer_or_broken_state_file_is_refused_with_the_fix(tmp_path: Path):
    (tmp_path / STATE_FILE).write_text(json.dumps({"version": VERSION + 1, "resolved": {}}))
    with pytest.raises(KitError, match=rf"version {VERSION + 1}.*Update the kit"):
        RunState.read(tmp_path)
    (tmp_path / STATE_FILE).write_text("{}")
    with pytest.raises(KitError, match=r"not a run state file.*rerun 01_eda"):
        RunState.read(tmp_path)


def test_the_eda_length_is_a_resolved_param_of_the_run(project: Path, tiny_model: Path):
    overrides = {"models": ["tfidf", "transformer"], "transformer.model": str(tiny_model)}
    run = open_run("params/topics.yaml", "eda-length", overrides)
    assert run.params.transformer.max_length is None
    result = run_eda(run, load_competition(run.params, project))

    stored = yaml.safe_load((run.path / "params.yaml").read_text())
    assert stored["transformer"]["max_length"] == result.suggested_max_length
    assert run.params.transformer.max_length == result.suggested_max_length
    resolved = run.state().resolved["transformer.max_length"]
    assert resolved.value == result.suggested_max_length and "01_eda" in resolved.source

    # 02_train opens the run with the same params file: the resolved length comes with it
    reopened = open_run("params/topics.yaml", "eda-length", overrides)
    assert reopened.params.transformer.max_length == result.suggested_max_length
    # a length set in the params now differs from the one the run was started with
    with pytest.raises(KitError, match=r"transformer\.max_length"):
        open_run("params/topics.yaml", "eda-length", {**overrides, "transformer.max_length": 7})


@pytest.mark.parametrize("own_model", [False, True])
def test_a_student_only_run_resolves_the_length_its_student_trains_with(
        project: Path, tiny_model: Path, own_model: bool):
    """Without `transformer` in `models`, the student's tokenizer measures the length: into
    `transformer.max_length` when it inherits those settings, into `distill.transformer`'s
    when it names its own model; either way the reopened run's student has it."""
    from kit.config.distill import student_transformer

    overrides = {"models": ["tfidf", "student"], "distill.teacher": "tfidf", "cv.folds": 2,
                 "transformer.model": "no-such-model" if own_model else str(tiny_model)}
    if own_model:
        overrides["distill.transformer"] = {"model": str(tiny_model)}
    run = open_run("params/topics.yaml", "eda-student", overrides)
    assert student_transformer(run.params).max_length is None
    result = run_eda(run, load_competition(run.params, project))
    assert result.token_unit == str(tiny_model)
    key = "distill.transformer.max_length" if own_model else "transformer.max_length"
    assert list(run.state().resolved) == [key]
    reopened = open_run("params/topics.yaml", "eda-student", overrides)
    assert student_transformer(reopened.params).max_length == result.suggested_max_length


def test_an_explicit_length_is_kept_and_nothing_is_resolved(project: Path, tiny_model: Path):
    overrides = {"models": ["tfidf", "transformer"], "transformer.model": str(tiny_model),
                 "transformer.max_length": 24}
    run = open_run("params/topics.yaml", "eda-fixed", overrides)
    run_eda(run, load_competition(run.params, project))
    assert run.state().resolved == {}
    assert yaml.safe_load((run.path / "params.yaml").read_text())["transformer"]["max_length"] == 24


# A metrics.json as the kit wrote it before run_state.json (k-fold tfidf + ensemble, decided,
# submitted): the layout that runs on disk today have.
OLD_METRICS = {
    "eda": {"train_rows": 60, "test_rows": 12, "classes": 3, "token_unit": "words",
            "suggested_max_length": 40, "max_length_percentile": 99.0,
            "checks": {"duplicate texts": 0}, "class_rows": {"a": 20}, "label_mapping": {},
            "data": {}},
    "folds": {"tfidf": {"r0_f0": {"f1_micro": 0.8, "seconds": 0.4, "rows": 20},
                        "r0_f1": {"f1_micro": 0.9, "seconds": 0.3, "rows": 20}}},
    "models": {"tfidf": {"f1_micro": 0.85, "accuracy": 0.85, "cv_mean": 0.85, "cv_std": 0.05,
                         "folds": 2, "train_seconds": 1.2},
               "ensemble": {"f1_micro": 0.86, "weights": {"tfidf": 1.0},
                            "member_scores": {"tfidf": 0.85}, "method": "hill_climb"}},
    "metric": "f1_micro", "best_model": "ensemble", "validation": 0.86,
    "decision": {"model": "ensemble", "rule": "argmax", "threshold": None, "temperature": 1.0,
                 "calibration": None, "validation_default": 0.86, "validation_rule": 0.86,
                 "threshold_search": None, "rule_guard": None},
    "submission": {"file": "submission.csv", "model": "ensemble", "rule": "argmax",
                   "command": ["kaggle", "competitions", "submit"], "kaggle_answer": "dry run"},
    "local_public": 0.8, "local_gap": 0.06,
}


def test_a_run_folder_from_before_the_state_file_reads_through_its_metrics(project: Path):
    from kit.evaluation.rule_store import chosen_model
    from kit.steps.train import cv_summary
    from kit.tracking.leaderboard import run_row

    run = open_run("params/topics.yaml", "old-layout", {"cv.folds": 2, "ensemble.enabled": True})
    (run.path / "metrics.json").write_text(json.dumps(OLD_METRICS))
    assert not (run.path / STATE_FILE).exists()

    state = run.state()
    assert state.best.model == chosen_model(run) == "ensemble" and state.best.validation == 0.86
    assert state.models["tfidf"].cv_std == 0.05 and state.models["tfidf"].score("accuracy") == 0.85
    assert state.models["ensemble"].details["weights"] == {"tfidf": 1.0}
    assert state.folds["tfidf"]["r0_f1"].score == 0.9 and state.eda.suggested_max_length == 40
    assert state.decision.validation_rule == 0.86 and state.submission.local["local_gap"] == 0.06
    assert cv_summary(run).loc["OOF", "tfidf"] == 0.85
    row, _ = run_row(run.path)
    assert (row["model"], row["cv_score"], row["local_public"]) == ("ensemble", 0.86, 0.8)

    # The next record writes run_state.json; metrics.json keeps the layout it had, values included.
    run.resolve_param("transformer.max_length", 40, "01_eda: test")
    assert json.loads((run.path / STATE_FILE).read_text())["version"] == VERSION
    assert json.loads((run.path / "metrics.json").read_text()) == OLD_METRICS
    assert run.state().best == state.best


def test_a_version_1_state_file_takes_the_rest_from_metrics(tmp_path: Path):
    (tmp_path / STATE_FILE).write_text(json.dumps({"version": 1, "resolved": {
        "transformer.max_length": {"value": 64, "source": "01_eda: p99"}}}))
    (tmp_path / "metrics.json").write_text(json.dumps(OLD_METRICS))
    state = RunState.read(tmp_path)
    assert state.resolved["transformer.max_length"].value == 64
    assert state.best.model == "ensemble" and set(state.models) == {"tfidf", "ensemble"}


def test_an_old_metrics_file_that_cannot_migrate_says_how_to_go_on(tmp_path: Path):
    (tmp_path / "metrics.json").write_text(json.dumps({"models": {"tfidf": {}},
                                                       "folds": {"tfidf": {"r0_f0": {}}}}))
    with pytest.raises(KitError, match=r"cannot be migrated.*Rerun 02_train.*start a new run"):
        RunState.read(tmp_path)
