"""The run folder: continue an unfinished run, refuse to overwrite a finished or different one."""

from pathlib import Path

import numpy as np
import pytest

from kit.cli import next_run_name
from kit.core.atomic import write_atomic
from kit.core.rundir import Predictions, open_run
from kit.errors import KitError


def test_open_writes_params_and_env(project: Path):
    run = open_run("params/topics.yaml")
    assert run.path == project / "outputs" / "topics"
    assert (run.path / "params.yaml").exists() and (run.path / "env.json").exists()


def test_reopen_with_same_params_continues(project: Path):
    run = open_run("params/topics.yaml")
    run.update_metrics(models={"tfidf": {"f1_micro": 0.5}})
    again = open_run("params/topics.yaml")
    again.update_metrics(models={"transformer": {"f1_micro": 0.7}})
    assert set(again.read_metrics()["models"]) == {"tfidf", "transformer"}


def test_reopen_with_other_params_is_refused(project: Path):
    open_run("params/topics.yaml")
    with pytest.raises(KitError, match=r"other params \(seed: 42 -> 7\)"):
        open_run("params/topics.yaml", overrides={"seed": 7})


def test_finished_run_is_never_overwritten(project: Path):
    open_run("params/topics.yaml").finish()
    with pytest.raises(KitError, match="finished"):
        open_run("params/topics.yaml")
    assert next_run_name("params/topics.yaml") == "topics-2"
    with pytest.raises(KitError, match="finished"):
        next_run_name("params/topics.yaml", "topics")
    open_run("params/topics.yaml", run_name="topics-2").finish()
    assert next_run_name("params/topics.yaml") == "topics-3"


def test_predictions_round_trip(project: Path):
    run = open_run("params/topics.yaml")
    probs = np.random.default_rng(0).dirichlet(np.ones(3), size=4)
    run.save_predictions(Predictions("tfidf", np.arange(4), probs, np.arange(2), probs[:2]))
    back = run.load_predictions("tfidf")
    assert np.array_equal(back.val_probs, probs) and back.test_ids.tolist() == [0, 1]
    with pytest.raises(KitError, match="No predictions for model 'transformer'"):
        run.load_predictions("transformer")


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path):
    target = tmp_path / "m.json"
    write_atomic(target, "old")

    with pytest.raises(TypeError):
        write_atomic(target, 123)  # type: ignore[arg-type]  # fails inside the write
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
