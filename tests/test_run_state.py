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


def test_an_explicit_length_is_kept_and_nothing_is_resolved(project: Path, tiny_model: Path):
    overrides = {"models": ["tfidf", "transformer"], "transformer.model": str(tiny_model),
                 "transformer.max_length": 24}
    run = open_run("params/topics.yaml", "eda-fixed", overrides)
    run_eda(run, load_competition(run.params, project))
    assert run.state().resolved == {}
    assert yaml.safe_load((run.path / "params.yaml").read_text())["transformer"]["max_length"] == 24
