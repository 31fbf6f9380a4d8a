"""05_infer and the bootstrap cell of every notebook: predict test from a packaged run in time."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import papermill as pm
import pytest

from kit.errors import KitError
from kit.kaggle import bootstrap
from kit.kaggle.package import copy_inference_run
from kit.steps.decide import fit_decision_rule
from kit.steps.infer import predict_test, sample_indices
from kit.steps.start import start
from kit.steps.train import train_models

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_starts_with_the_bootstrap_cell(notebook: Path):
    cells = [c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]
    assert "".join(cells[0]["source"]) + "\n" == bootstrap.cell_source()
    assert cells[0]["metadata"]["tags"] == ["bootstrap"] and not cells[0]["outputs"]
    assert "parameters" in cells[1]["metadata"]["tags"]


def test_bootstrap_does_nothing_where_the_kit_imports():
    assert bootstrap.install_kit() == "kit already importable: nothing installed"


@pytest.fixture
def no_kit(monkeypatch):
    """Pretend `kit` is not importable; record the pip command instead of running it."""
    real = bootstrap.importlib.util.find_spec
    monkeypatch.setattr(bootstrap.importlib.util, "find_spec",
                        lambda name: None if name == "kit" else real(name))
    calls = []
    monkeypatch.setattr(bootstrap.subprocess, "run",
                        lambda cmd, check: calls.append(cmd) or subprocess.CompletedProcess(
                            cmd, 0))
    return calls


def test_bootstrap_installs_from_attached_wheels_pinning_torch(no_kit, tmp_path: Path):
    import torch

    wheels = tmp_path / "input" / "datasets" / "alice" / "topics-offline" / "wheels"
    wheels.mkdir(parents=True)
    (wheels / "compkit-0.1.0-py3-none-any.whl").write_bytes(b"")
    said = bootstrap.install_kit(str(tmp_path / "input"))
    cmd = no_kit[0]
    assert cmd[cmd.index("--find-links") + 1] == str(wheels)
    assert "--no-index" in cmd and cmd[-1] == "compkit" and said.startswith("installed:")
    pins = Path(cmd[cmd.index("-c") + 1]).read_text()
    assert f"torch=={torch.__version__}" in pins


def test_bootstrap_installs_from_the_source_when_no_wheels_are_attached(no_kit, tmp_path):
    bootstrap.install_kit(str(tmp_path / "nothing"), source="git+https://example.org/kit")
    assert no_kit[0][-1] == "git+https://example.org/kit" and "--no-index" not in no_kit[0]


def test_the_timing_sample_spans_short_to_long_texts():
    lengths = [50, 1, 30, 7, 100, 3]
    picks = sample_indices(lengths, 3)
    assert [lengths[i] for i in picks] == [1, 7, 100]  # sorted: 1 3 7 30 50 100
    assert len(sample_indices(lengths, 64)) == 6


@pytest.fixture
def packaged(project: Path, tmp_path: Path) -> Path:
    """A trained TF-IDF run of `topics` with its rule, copied as `kit package` ships it."""
    run, comp = start("params/topics.yaml")
    train_models(run, comp)
    fit_decision_rule(run, comp)
    inputs = tmp_path / "kaggle_input"
    copy_inference_run(run.path, inputs / "topics-offline" / "run")
    return inputs


def test_infer_stops_with_advice_before_the_time_limit(project: Path, packaged: Path):
    run, comp = start("params/topics.yaml", "too-slow", {
        "platform.input_dir": str(packaged), "kaggle.time_limit_hours": 1e-9})
    with pytest.raises(KitError) as err:
        predict_test(run, comp)
    assert "stopped before Kaggle kills the notebook" in str(err.value)
    assert "kaggle.time_limit_hours" in str(err.value)
    assert not (run.path / "submission.csv").exists()


@pytest.mark.slow
def test_05_infer_notebook_writes_a_valid_submission(project: Path, packaged: Path,
                                                     monkeypatch):
    working = project / "kaggle_working"
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")  # write where Kaggle scores it too
    out = project / "05_infer.ipynb"
    pm.execute_notebook(
        str(REPO / "notebooks" / "05_infer.ipynb"), str(out),
        parameters={"params_path": "params/topics.yaml", "run_name": "topics-infer",
                    "overrides": {"platform.input_dir": str(packaged),
                                  "platform.working_dir": str(working)}},
        cwd=str(project), progress_bar=False, kernel_name="python3")
    sub = pd.read_csv(project / "outputs" / "topics-infer" / "submission.csv")
    sample = pd.read_csv(project / "data" / "topics" / "sample_submission.csv")
    assert sub["id"].tolist() == sample["id"].tolist()
    assert set(sub["label"]) <= {"sport", "food", "tech"}
    assert (working / "submission.csv").read_text() == (
        project / "outputs" / "topics-infer" / "submission.csv").read_text()
    printed = "".join("".join(o.get("text", "")) for c in json.loads(out.read_text())["cells"]
                      for o in c.get("outputs", []) if o["output_type"] == "stream")
    assert "model: tfidf from" in printed and "topics-offline/run" in printed
    assert "kit already importable" in printed
