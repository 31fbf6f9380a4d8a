"""Training on Kaggle across sessions, and the local Kaggle that really runs a pushed notebook.

The kaggle CLI is the real one, talking to tests/kaggle_standin/server.py on loopback; with a
KernelRunner (tests/kaggle_standin/kernels.py) attached, a pushed notebook runs with papermill in
a sandbox laid out as /kaggle/input and /kaggle/working. Tests that start the stand-in bind
127.0.0.1:80: run them in their own network namespace (see tests/test_kaggle_delivery.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import numpy as np
import pytest
import yaml
from kaggle_standin.kernels import KernelRunner, KernelVersion
from kaggle_standin.server import SUBMISSION_MESSAGE

from kit.cli import main as kit_main
from kit.core import platform
from kit.core.carry_over import carry_over_session
from kit.core.rundir import open_run, run_path
from kit.errors import KitError
from kit.kaggle import metadata
from kit.kaggle.commands import run_kaggle
from kit.kaggle.kernels import fetch_output, follow
from kit.kaggle.package import copy_inference_run, dataset_slug, run_params, send_dataset
from kit.kaggle.push import push_run
from kit.kaggle.remote_train import budget_minutes, pull_run, push_training
from tests.conftest import standin_cli_env

TOKEN = "tok-5e4d3c2b1a0f9e8d7c6b"
OWNER = "standin-user"
CODE_SUBMIT = "competitions.CompetitionApiService/CreateCodeSubmission"


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture
def kaggle(standin, tmp_path):
    """The stand-in's state, with a kernel runner whose sandboxes live under tmp_path."""
    state = standin.state
    state.runner = KernelRunner(tmp_path / "standin-kaggle", time_limit_seconds=300)
    yield state
    state.runner = None


@pytest.fixture
def cli_env(tmp_path, monkeypatch) -> dict[str, str]:
    return standin_cli_env(tmp_path, monkeypatch, TOKEN)


def probe_notebook(*cells: str) -> str:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nbformat.writes(nb)


PROBE = """
import json, os, pathlib, socket
root = pathlib.Path(os.environ.get("KIT_KAGGLE_INPUT", "/kaggle/input"))
try:
    socket.create_connection(("127.0.0.1", 80), timeout=5).close()
    net = "connected"
except OSError as err:
    net = type(err).__name__
names = ("KAGGLE_KERNEL_RUN_TYPE", "COLAB_RELEASE_TAG", "KAGGLE_API_TOKEN", "COMPKIT_ROOT")
pathlib.Path("probe.json").write_text(json.dumps({
    "env": {k: os.environ.get(k) for k in names}, "net": net, "cwd": os.getcwd(),
    "input": sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())}))
"""


def push_probe(folder: Path, name: str, source: str, env: dict, **meta) -> str:
    """Push `source` as notebook `name` with the real `kaggle kernels push`; its ref."""
    folder.mkdir(parents=True)
    (folder / "probe.ipynb").write_text(source)
    metadata.write_metadata(folder, metadata.KERNEL_FILE, metadata.kernel_metadata(
        OWNER, name, "probe.ipynb", accelerator="none", **meta))
    run_kaggle(["kernels", "push", "-p", str(folder)], "push", "page", env=env)
    return f"{OWNER}/{name}"


def finish(kaggle, ref: str, env: dict) -> str:
    """`kaggle kernels status` until the session ends (each poll waits for the runner)."""
    return follow(ref, "page", env, 1, 3600, sleep=lambda s: kaggle.runner.wait(ref))


def upload_dataset(folder: Path, slug: str, run: Path, env: dict) -> str:
    metadata.write_metadata(folder, metadata.DATASET_FILE,
                            metadata.dataset_metadata(OWNER, slug))
    send_dataset(folder, f"{OWNER}/{slug}", run, env=env)
    return f"{OWNER}/{slug}"


# ----------------------------------------------------------------------------- no network


def test_the_training_budget_keeps_a_margin_before_the_session_limit():
    assert budget_minutes(9) == 510  # 30 min kept back at most
    assert budget_minutes(12) == 690
    assert budget_minutes(0.5) == 27  # 10 %
    assert budget_minutes(0.1) == 4  # at least 2 min


def test_training_is_pushed_online_with_a_time_budget_and_scoring_stays_offline(
        project: Path, tmp_path, capsys):
    run = open_run("params/topics.yaml", overrides={
        "kaggle.owner": OWNER, "kaggle.code_competition": True,
        "kaggle.time_limit_hours": 12}).path
    code = kit_main(["push", str(run), "--out", str(tmp_path / "train"), "--dry-run",
                     "--notebook", "02_train"])
    assert code == 0
    meta = json.loads((tmp_path / "train" / metadata.KERNEL_FILE).read_text())
    assert meta["id"] == f"{OWNER}/topics-02-train" and meta["code_file"] == "02_train.ipynb"
    assert meta["enable_internet"] is True and meta["machine_shape"] == "NvidiaTeslaT4"
    assert meta["enable_gpu"] is True and meta["kernel_sources"] == []
    cells = json.loads((tmp_path / "train" / "02_train.ipynb").read_text())["cells"]
    injected = next(c for c in cells if "injected-parameters" in c["metadata"].get("tags", []))
    assert '"transformer.time_budget_minutes": 690.0' in "".join(injected["source"])
    assert "training session 1" in capsys.readouterr().out
    # The scoring notebook of the same code competition stays offline.
    assert kit_main(["push", str(run), "--out", str(tmp_path / "infer"), "--dry-run"]) == 0
    meta = json.loads((tmp_path / "infer" / metadata.KERNEL_FILE).read_text())
    assert meta["enable_internet"] is False and meta["code_file"] == "05_infer.ipynb"


def test_continue_attaches_the_previous_output_and_needs_a_first_session(project: Path,
                                                                        tmp_path):
    run = open_run("params/topics.yaml", overrides={"kaggle.owner": OWNER}).path
    with pytest.raises(KitError, match="no earlier training session"):
        push_training(run, tmp_path / "nb", resume=True, dry_run=False, env={})
    (run / "kaggle.json").write_text(json.dumps({"training": {
        "ref": f"{OWNER}/topics-02-train", "sessions": [{"version": 1, "finished": False}]}}))
    assert kit_main(["push", str(run), "--out", str(tmp_path / "nb"), "--continue",
                     "--dry-run"]) == 0
    meta = json.loads((tmp_path / "nb" / metadata.KERNEL_FILE).read_text())
    assert meta["kernel_sources"] == [f"{OWNER}/topics-02-train"]
    assert meta["code_file"] == "02_train.ipynb"
    (run / "kaggle.json").write_text(json.dumps({"training": {
        "ref": f"{OWNER}/topics-02-train", "sessions": [{"version": 2, "finished": True}]}}))
    with pytest.raises(KitError, match="nothing to continue"):
        push_training(run, tmp_path / "nb", resume=True, dry_run=True, env={})


def test_kaggle_folders_follow_the_sandbox_roots(project: Path, tmp_path, monkeypatch):
    sandbox = tmp_path / "box"
    (sandbox / "input" / "ds").mkdir(parents=True)
    (sandbox / "input" / "ds" / "params.yaml").write_text("x")
    monkeypatch.setenv(platform.KAGGLE_INPUT_ENV, str(sandbox / "input"))
    monkeypatch.setenv(platform.KAGGLE_WORKING_ENV, str(sandbox / "working"))
    assert platform.kaggle_path("/kaggle/working/outputs") == sandbox / "working" / "outputs"
    assert platform.kaggle_path("/kaggle/input/ds/a.csv") == sandbox / "input" / "ds" / "a.csv"
    assert platform.kaggle_path("/elsewhere/a") == Path("/elsewhere/a")
    assert platform.find_input(Path("/kaggle/input/ds/params.yaml")) == (
        sandbox / "input" / "ds" / "params.yaml")
    params = run_params(open_run("params/topics.yaml").path)
    params.output_dir = "/kaggle/working/outputs"
    assert run_path(params, project) == sandbox / "working" / "outputs" / "topics"
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    assert platform.detect().working_dir == sandbox / "working"


def test_a_new_session_starts_from_the_attached_previous_output(tmp_path, monkeypatch):
    inputs, working = tmp_path / "input", tmp_path / "working"
    previous = inputs / "topics-02-train" / "outputs" / "topics"
    (previous / "models" / "transformer" / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    (previous / "params.yaml").write_text("name: topics\n")
    (previous / "models" / "transformer" / "checkpoints" / "checkpoint-5" / "w").write_text("5")
    env = {platform.KAGGLE_INPUT_ENV: str(inputs), "KAGGLE_KERNEL_RUN_TYPE": "Batch"}
    dest = working / "outputs" / "topics"
    assert carry_over_session(dest, "topics", {**env, "KAGGLE_KERNEL_RUN_TYPE": ""}) is None
    assert carry_over_session(dest, "other", env) is None
    assert carry_over_session(dest, "topics", env) == previous
    assert (dest / "models/transformer/checkpoints/checkpoint-5/w").read_text() == "5"
    (dest / "params.yaml").write_text("name: topics  # this session's\n")
    assert carry_over_session(dest, "topics", env) is None  # an existing run folder is kept
    assert "this session's" in (dest / "params.yaml").read_text()


# ----------------------------------------------------------------------------- the local Kaggle


def test_without_root_the_session_hook_refuses_the_internet(tmp_path):
    """The sitecustomize a session gets (kernels.py): without root, internet off refuses every
    connect but the kernel's own loopback channels. (Its budget clock is what stops the
    sessions of the slow training sequence below at known steps.)"""
    import socket
    import subprocess
    import sys

    from kaggle_standin.kernels import SITECUSTOMIZE

    (tmp_path / "sitecustomize.py").write_text(SITECUSTOMIZE)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    probe = ("import socket\n"
             "for host, port in (('127.0.0.1', {port}), ('127.0.0.1', 80), ('10.1.2.3', 443)):\n"
             "    try:\n"
             "        socket.create_connection((host, port), timeout=2).close(); print('ok')\n"
             "    except OSError as err:\n"
             "        print(type(err).__name__, err.errno)\n").replace("{port}", str(port))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get(
        "PYTHONPATH", "")]), "KIT_STANDIN_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                          text=True, timeout=60, check=True)
    listener.close()
    assert done.stdout.splitlines() == ["ok", "ConnectionRefusedError 111",
                                        "ConnectionRefusedError 111"]


def test_a_pushed_notebook_runs_in_kaggles_layout_with_the_internet_switch(
        project, tmp_path, kaggle, cli_env):
    kaggle.runner.competitions["topics"] = project / "data" / "topics"
    data = tmp_path / "ds"
    (data / "wheels").mkdir(parents=True)
    (data / "wheels" / "compkit-0.1.0-py3-none-any.whl").write_bytes(b"wheel")
    (data / "params.yaml").write_text("name: topics\n")
    dataset = upload_dataset(data, "topics-offline", tmp_path, cli_env)
    ref = push_probe(tmp_path / "nb", "probe-offline", probe_notebook(PROBE), cli_env,
                     dataset_sources=[dataset], competition_sources=["topics"])
    assert kaggle.runner.versions[ref][-1].status in ("QUEUED", "RUNNING", "COMPLETE")
    assert finish(kaggle, ref, cli_env) == "COMPLETE"
    out = tmp_path / "out"
    files = fetch_output(ref, out, "page", cli_env)
    assert "probe.json" in files and "probe-offline.log" in files
    probe = json.loads((out / "probe.json").read_text())
    assert probe["env"]["KAGGLE_KERNEL_RUN_TYPE"] == "Batch"
    assert probe["env"]["COLAB_RELEASE_TAG"]  # inherited from Colab's base image
    assert probe["env"]["KAGGLE_API_TOKEN"] is None and probe["env"]["COMPKIT_ROOT"] is None
    assert probe["net"] == "ConnectionRefusedError"  # internet off: the stand-in is unreachable
    assert Path(probe["cwd"]).name == "working"
    assert {"topics/train.csv", "topics/test.csv", "topics/sample_submission.csv",
            "topics-offline/params.yaml",
            "topics-offline/wheels/compkit-0.1.0-py3-none-any.whl"} <= set(probe["input"])

    # Internet on, and the first notebook's output attached as a kernel source.
    ref2 = push_probe(tmp_path / "nb2", "probe-online", probe_notebook(PROBE), cli_env,
                      internet=True, kernel_sources=[ref])
    assert finish(kaggle, ref2, cli_env) == "COMPLETE"
    fetch_output(ref2, tmp_path / "out2", "page", cli_env)
    probe = json.loads((tmp_path / "out2" / "probe.json").read_text())
    assert probe["net"] == "connected"
    assert probe["input"] == ["probe-offline/probe.json"]


def test_the_wall_clock_limit_kills_the_session_and_keeps_what_it_wrote(tmp_path, kaggle,
                                                                       cli_env):
    kaggle.runner.time_limit_seconds = 20
    source = probe_notebook("open('before.txt', 'w').write('written')",
                            "import time\ntime.sleep(3600)", "open('after.txt', 'w')")
    ref = push_probe(tmp_path / "nb", "sleeper", source, cli_env)
    assert finish(kaggle, ref, cli_env) == "ERROR"
    assert "exceeded the max allowed execution duration" in kaggle.runner.versions[ref][-1].failure
    files = fetch_output(ref, tmp_path / "out", "page", cli_env)
    assert "before.txt" in files and "after.txt" not in files
    status = run_kaggle(["kernels", "status", ref], "status", "page", env=cli_env).output
    assert "ERROR" in status


def test_pull_brings_back_a_finished_run_and_keeps_the_local_params(project, tmp_path, kaggle,
                                                                   cli_env):
    run = open_run("params/topics.yaml", overrides={"kaggle.owner": OWNER}).path  # tfidf
    with pytest.raises(KitError, match="was not trained on Kaggle"):
        pull_run(run, env=cli_env)
    ref = f"{OWNER}/topics-02-train"
    remote = tmp_path / "served" / "outputs" / "topics"  # what the session left in /kaggle/working
    (remote / "models" / "tfidf").mkdir(parents=True)
    (remote / "params.yaml").write_text("name: topics  # with Kaggle's folders\n")
    (remote / "metrics.json").write_text(json.dumps({"models": {}}))
    version = KernelVersion(ref, 1, status="COMPLETE", output=tmp_path / "served")
    version.done.set()
    kaggle.runner.versions[ref] = [version]  # served as that notebook's latest output
    (run / "kaggle.json").write_text(json.dumps({"training": {"ref": ref, "sessions": [
        {"version": 1, "finished": True}]}}))
    with pytest.raises(KitError, match="no finished training of topics"):
        pull_run(run, env=cli_env)
    (remote / "metrics.json").write_text(json.dumps({"models": {"tfidf": {"f1_micro": 0.9}}}))
    (remote / "predictions").mkdir()
    (remote / "predictions" / "tfidf.npz").write_bytes(b"predictions")
    (remote / "models" / "tfidf" / "pipeline.joblib").write_bytes(b"model")
    local = (run / "params.yaml").read_text()
    assert pull_run(run, env=cli_env) == run
    assert (run / "predictions" / "tfidf.npz").read_bytes() == b"predictions"
    assert (run / "models" / "tfidf" / "pipeline.joblib").read_bytes() == b"model"
    assert json.loads((run / "metrics.json").read_text())["models"]["tfidf"]["f1_micro"] == 0.9
    assert (run / "params.yaml").read_text() == local
    assert json.loads((run / "kaggle.json").read_text())["training"]["ref"] == ref


# ----------------------------------------------------------------------------- sequences


def _kaggle_params(project: Path, slug: str, extra: dict) -> None:
    params = yaml.safe_load((project / "params" / f"{slug}.yaml").read_text())
    params.setdefault("kaggle", {}).update({"owner": OWNER, "accelerator": "none"})
    for key, value in extra.items():
        params.setdefault(key, {}).update(value) if isinstance(value, dict) else params.update(
            {key: value})
    (project / "params" / f"{slug}.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.slow
def test_package_push_infer_status_output_submit(project, tmp_path, kaggle, cli_env):
    """The code-competition sequence end to end: 05_infer really runs on the local Kaggle."""
    from kit.steps.decide import fit_decision_rule
    from kit.steps.start import start
    from kit.steps.train import train_models

    kaggle.runner.competitions["topics"] = project / "data" / "topics"
    _kaggle_params(project, "topics", {"kaggle": {"code_competition": True},
                                       "models": ["tfidf"]})
    run, comp = start("params/topics.yaml")
    train_models(run, comp)
    fit_decision_rule(run, comp)
    # The dataset `kit package` writes, less the wheels (the kit is importable in the sandbox,
    # and the package index is out of reach in the test's network namespace).
    params = run_params(run.path)
    data = tmp_path / "ds"
    copy_inference_run(run.path, data / "run")
    (data / "params.yaml").write_text((run.path / "params.yaml").read_text())
    upload_dataset(data, dataset_slug(params), run.path, cli_env)

    result = push_run(run.path, tmp_path / "nb", dry_run=False, submit=True, env=cli_env,
                      poll_seconds=1, sleep=lambda s: kaggle.runner.wait(result_ref(params)))
    assert result.status == "COMPLETE" and result.version == 1
    assert result.submission.startswith(SUBMISSION_MESSAGE)
    sub = (run.path / "kaggle_output" / "submission.csv").read_text().splitlines()
    assert sub[0] == "id,label" and len(sub) == len(comp.test) + 1
    local = run.load_predictions("tfidf")
    assert len(local.test_ids) == len(comp.test)
    code = kaggle.find(CODE_SUBMIT).json()
    assert code["kernelSlug"] == "topics-05-infer" and code["kernelVersion"] == 1


def result_ref(params) -> str:
    return f"{OWNER}/{metadata.slugify(f'{params.name}-05_infer')}"


@pytest.mark.slow
def test_training_stopped_by_its_budget_continues_twice_and_pulls_back_equal(
        project, tmp_path, kaggle, cli_env, tiny_model, monkeypatch, one_thread):
    """push 02_train -> stopped at its time budget -> --continue twice -> pull, as one run."""
    from kit.steps.start import start
    from kit.steps.train import train_models

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the sandboxed sessions and the reference alike
    transformer = {"model": str(tiny_model), "max_length": 32, "batch_size": 8, "max_steps": 14,
                   "eval_steps": 5, "save_steps": 5, "eval_batch_size": 16, "lr": 2e-2,
                   "save_total_limit": 2}
    _kaggle_params(project, "topics", {"models": ["transformer"], "transformer": transformer,
                                       "kaggle": {"time_limit_hours": 1},
                                       "tracking": {"enabled": False}})
    kaggle.runner.competitions["topics"] = project / "data" / "topics"
    # The sessions' budget clock: 1/9 of the budget per reading, so each stops at a known step.
    budget_seconds = budget_minutes(1) * 60
    kaggle.runner.session_env["KIT_STANDIN_CLOCK_SECONDS"] = str(budget_seconds / 9)
    kaggle.runner.session_env["OMP_NUM_THREADS"] = "1"

    run = open_run("params/topics.yaml", run_name="remote").path
    params = run_params(run)
    data = tmp_path / "ds"
    data.mkdir()
    (data / "params.yaml").write_text((run / "params.yaml").read_text())
    upload_dataset(data, dataset_slug(params), run, cli_env)
    ref = f"{OWNER}/remote-02-train"

    def wait(seconds):
        kaggle.runner.wait(ref)

    sessions = [push_training(run, tmp_path / "nb", dry_run=False, env=cli_env, sleep=wait)]
    for _ in range(2):
        sessions.append(push_training(run, tmp_path / "nb", resume=True, dry_run=False,
                                      env=cli_env, sleep=wait))
    steps = [s.push for s in sessions]
    assert [p.version for p in steps] == [1, 2, 3]
    assert [s.finished for s in sessions] == [False, False, True], [s.message for s in sessions]
    assert steps[0].status == "ERROR" and steps[2].status == "COMPLETE"
    state = json.loads((run / "kaggle.json").read_text())["training"]
    stops = [s["steps"][-1] for s in state["sessions"][:2]]
    assert 0 < stops[0] < stops[1] < 14, state
    logs = [(run / "kaggle_training" / f"v{n}" / "remote-02-train.log").read_text()
            for n in (1, 2, 3)]
    assert "ran out" in logs[0] and f"resumed from step {stops[0]} of 14" in logs[1]
    assert f"resumed from step {stops[1]} of 14" in logs[2]
    saves = [r.json() for r in kaggle.requests if r.endpoint.endswith("SaveKernel")]
    assert [s.get("kernelDataSources") or [] for s in saves] == [[], [ref], [ref]]
    assert all(s["enableInternet"] is True for s in saves)

    for name in ("KAGGLE_API_ENVIRONMENT", "KAGGLE_API_TOKEN", "NO_PROXY"):
        monkeypatch.setenv(name, cli_env[name])  # `python -m kit pull` reads the environment
    assert kit_main(["pull", str(run)]) == 0
    pulled = np.load(run / "predictions" / "transformer.npz", allow_pickle=True)
    assert (run / "params.yaml").read_text() == (data / "params.yaml").read_text()

    reference_run, comp = start("params/topics.yaml", "uninterrupted")
    train_models(reference_run, comp)
    reference = reference_run.load_predictions("transformer")
    np.testing.assert_allclose(pulled["test_probs"], reference.test_probs, rtol=0, atol=1e-6)
    np.testing.assert_allclose(pulled["val_probs"], reference.val_probs, rtol=0, atol=1e-6)
    bitwise = np.array_equal(pulled["test_probs"], reference.test_probs)
    print(f"session stops at steps {stops}, then 14; test predictions bitwise equal: {bitwise}")
    with pytest.raises(KitError, match="nothing to continue"):
        push_training(run, tmp_path / "nb", resume=True, dry_run=False, env=cli_env)
    assert pull_run(run, env=cli_env) == run
