"""kit push / kit package against the REAL kaggle CLI and a stand-in Kaggle API on loopback.

Metadata is checked by the kaggle CLI's own code (kit.kaggle.metadata.validate); kernels push,
status and output, datasets create and version, and code-competition submissions go through the
installed `kaggle` command to tests/kaggle_standin/server.py, with success, 401, 500, a dropped
connection and a failed kernel.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kaggle_standin.server import SUBMISSION_MESSAGE

from kit.cli import main as kit_main
from kit.core.rundir import open_run
from kit.errors import KitError
from kit.kaggle import metadata
from kit.kaggle.package import send_dataset
from kit.kaggle.push import push_run
from kit.submission.store import read_log, sha256_of
from tests.conftest import standin_cli_env

TOKEN = "tok-9d8c7b6a5f4e3d2c1b0a"
SAVE = "kernels.KernelsApiService/SaveKernel"
STATUS = "kernels.KernelsApiService/GetKernelSessionStatus"
OUTPUT = "kernels.KernelsApiService/ListKernelSessionOutput"
CREATE = "datasets.DatasetApiService/CreateDataset"
VERSION = "datasets.DatasetApiService/CreateDatasetVersion"
BLOB = "blobs.BlobApiService/StartBlobUpload"
CODE_SUBMIT = "competitions.CompetitionApiService/CreateCodeSubmission"
OWNER = "standin-user"
DATASET = f"{OWNER}/topics-offline"
DATASET_STATUS = "datasets.DatasetApiService/GetDatasetStatus"


@pytest.fixture
def kaggle(standin):
    """The stand-in (tests/conftest.py: as fresh as a new one), the run's dataset on it."""
    standin.state.datasets[DATASET] = 1
    return standin.state


@pytest.fixture
def cli_env(tmp_path, monkeypatch) -> dict[str, str]:
    return standin_cli_env(tmp_path, monkeypatch, TOKEN)


def make_run(project: Path, name: str = "", **kaggle) -> Path:
    overrides = {"kaggle.owner": OWNER, **{f"kaggle.{k}": v for k, v in kaggle.items()}}
    return open_run("params/topics.yaml", name, overrides=overrides).path


def no_token_under(*folders: Path) -> None:
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                assert TOKEN.encode() not in path.read_bytes(), path


# ----------------------------------------------------------------------------- metadata


def test_internet_on_is_refused_for_a_code_competition():
    with pytest.raises(KitError, match="internet on for a code competition"):
        metadata.kernel_metadata("alice", "my-infer", "nb.ipynb", internet=True,
                                 code_competition=True)


def test_the_kaggle_cli_code_accepts_good_metadata_and_refuses_bad(tmp_path: Path):
    kernel = tmp_path / "kernel"
    kernel.mkdir()
    (kernel / "nb.ipynb").write_text('{"cells": [], "metadata": {}, "nbformat": 4, '
                                     '"nbformat_minor": 5}')
    meta = metadata.kernel_metadata("alice", "topics-infer", "nb.ipynb",
                                    dataset_sources=["alice/topics-offline"])
    metadata.write_metadata(kernel, metadata.KERNEL_FILE, meta)
    metadata.validate(kernel, "kernel")
    metadata.write_metadata(kernel, metadata.KERNEL_FILE, {**meta, "code_file": "gone.ipynb"})
    with pytest.raises(KitError, match="Source file not found"):
        metadata.validate(kernel, "kernel")
    metadata.write_metadata(kernel, metadata.KERNEL_FILE, {**meta, "language": "julia"})
    with pytest.raises(KitError, match="valid language"):
        metadata.validate(kernel, "kernel")

    data = tmp_path / "data"
    metadata.write_metadata(data, metadata.DATASET_FILE,
                            metadata.dataset_metadata("alice", "topics-offline"))
    metadata.validate(data, "dataset")
    metadata.write_metadata(data, metadata.DATASET_FILE, metadata.dataset_metadata("alice", "x"))
    with pytest.raises(KitError, match="slug must be between 6 and 50"):
        metadata.validate(data, "dataset")
    assert sorted(p.name for p in data.iterdir()) == [metadata.DATASET_FILE]  # nothing left


# ----------------------------------------------------------------------------- push


def test_dry_run_bakes_the_params_and_prints_the_commands(project: Path, tmp_path, capsys):
    run = make_run(project)
    out = tmp_path / "nb"
    code = kit_main(["push", str(run), "--out", str(out), "--dry-run", "--notebook", "04_submit"])
    assert code == 0
    meta = json.loads((out / metadata.KERNEL_FILE).read_text())
    assert meta["id"] == f"{OWNER}/topics-04-submit" and meta["code_file"] == "04_submit.ipynb"
    assert meta["enable_internet"] is False and meta["machine_shape"] == "NvidiaTeslaT4"
    assert meta["dataset_sources"] == [f"{OWNER}/topics-offline"]
    assert meta["competition_sources"] == ["topics"]
    cells = json.loads((out / "04_submit.ipynb").read_text())["cells"]
    injected = next(c for c in cells if "injected-parameters" in c["metadata"].get("tags", []))
    source = "".join(injected["source"])
    assert 'params_path = "/kaggle/input/topics-offline/params.yaml"' in source
    assert "/kaggle/working/outputs" in source
    assert all(not c.get("outputs") for c in cells if c["cell_type"] == "code")
    printed = capsys.readouterr().out
    assert f"kaggle kernels push -p {out}" in printed
    assert f"kaggle kernels status {OWNER}/topics-04-submit" in printed


def test_push_follows_the_kernel_fetches_its_output_and_submits(project, tmp_path, kaggle,
                                                                cli_env, caplog):
    caplog.set_level("INFO")
    run = make_run(project, code_competition=True)
    ref = f"{OWNER}/topics-04-submit"
    kaggle.kernel_statuses[ref] = ["QUEUED", "RUNNING", "COMPLETE"]
    kaggle.kernel_files["echo.txt"] = f"token was {TOKEN}\n".encode()
    sleeps = []
    result = push_run(run, tmp_path / "nb", notebook="04_submit", dry_run=False, submit=True,
                      env=cli_env, poll_seconds=60, sleep=sleeps.append)
    assert result.version == 1 and result.status == "COMPLETE" and sleeps == [60, 60]
    assert result.submission.startswith(SUBMISSION_MESSAGE)
    save = kaggle.find(SAVE).json()
    assert save["slug"] == ref and save["enableInternet"] is False
    assert save["machineShape"] == "NvidiaTeslaT4"
    assert save["datasetDataSources"] == [f"{OWNER}/topics-offline"]
    assert "kaggle/input/topics-offline/params.yaml" in save["text"]
    assert kaggle.endpoints().count(STATUS) == 3
    assert (run / "kaggle_output" / "submission.csv").read_text() == "id,label\n1,spam\n"
    assert (run / "kaggle_output" / "topics-04-submit.log").is_file()
    assert (run / "kaggle_output" / "echo.txt").read_text() == "token was [hidden]\n"
    code = kaggle.find(CODE_SUBMIT).json()
    assert code["kernelSlug"] == "topics-04-submit" and code["kernelVersion"] == 1
    assert code["competitionName"] == "topics" and code["fileName"] == "submission.csv"
    state = json.loads((run / "kaggle.json").read_text())
    assert state["kernel"] == {"ref": ref, "version": 1}
    logged = read_log(project / "outputs" / "submissions.csv").iloc[-1]
    assert logged["run"] == "topics" and logged["message"] == "topics" and logged["ok"]
    assert logged["sha256"] == sha256_of(run / "kaggle_output" / "submission.csv")
    assert "RUNNING (1 min)" in caplog.text
    no_token_under(run, tmp_path / "nb")
    assert TOKEN not in caplog.text


def test_a_failed_kernel_is_an_error_with_the_tail_of_its_log(project, tmp_path, kaggle,
                                                              cli_env):
    run = make_run(project)
    kaggle.kernel_statuses[f"{OWNER}/topics-04-submit"] = ["RUNNING", "ERROR"]
    kaggle.kernel_log = json.dumps([
        {"stream_name": "stdout", "time": 1.0, "data": "loading model\n"},
        {"stream_name": "stderr", "time": 2.0, "data": "CUDA out of memory. Tried 2 GiB\n"}])
    with pytest.raises(KitError) as err:
        push_run(run, tmp_path / "nb", notebook="04_submit", dry_run=False, env=cli_env,
                 sleep=lambda s: None)
    assert "ended ERROR" in str(err.value) and "CUDA out of memory" in str(err.value)
    assert "/log" in str(err.value)


@pytest.mark.parametrize(("endpoint", "how", "words"), [
    (SAVE, 401, ["HTTP 401", "new token"]),
    (STATUS, 500, ["HTTP 500", "retry"]),
    (SAVE, "drop", ["connection", "internet"]),
    (OUTPUT, 500, ["HTTP 500"]),
], ids=["401-push", "500-status", "dropped-push", "500-output"])
def test_push_failures_say_what_happened_and_the_fix(project, tmp_path, kaggle, cli_env,
                                                     endpoint, how, words, capfd):
    run = make_run(project)
    kaggle.failures[endpoint] = how
    with pytest.raises(KitError) as err:
        push_run(run, tmp_path / "nb", notebook="04_submit", dry_run=False, env=cli_env,
                 sleep=lambda s: None)
    for word in words:
        assert word in str(err.value)
    assert TOKEN not in str(err.value)
    out = capfd.readouterr()
    assert TOKEN not in out.out + out.err
    no_token_under(run)


# ----------------------------------------------------------------------------- datasets


@pytest.fixture
def fresh(kaggle):
    """The stand-in without the run's dataset: `datasets create` makes it."""
    kaggle.datasets.clear()
    return kaggle


def dataset_folder(tmp_path: Path) -> Path:
    out = tmp_path / "ds"
    (out / "wheels").mkdir(parents=True)
    (out / "wheels" / "compkit-0.1.0-py3-none-any.whl").write_bytes(b"not really a wheel")
    (out / "params.yaml").write_text("name: topics\n")
    metadata.write_metadata(out, metadata.DATASET_FILE,
                            metadata.dataset_metadata(OWNER, "topics-offline"))
    return out


def test_dataset_is_created_then_versioned(tmp_path, fresh, cli_env):
    kaggle = fresh
    out, run = dataset_folder(tmp_path), tmp_path / "run"
    run.mkdir()
    ref = f"{OWNER}/topics-offline"
    commands, answer = send_dataset(out, ref, run, env=cli_env)
    assert commands == [f"kaggle datasets create -p {out} --dir-mode zip"]
    assert "being created" in answer
    create = kaggle.find(CREATE).json()
    assert (create["ownerSlug"], create["slug"], create["isPrivate"]) == (OWNER, "topics-offline",
                                                                          True)
    assert sorted(kaggle.blob_names.values()) == ["params.yaml", "wheels.zip"]

    commands, _ = send_dataset(out, ref, run, message="run 2", env=cli_env)
    assert commands == [f"kaggle datasets version -p {out} -m 'run 2' --dir-mode zip"]
    assert kaggle.find(VERSION).json()["body"]["versionNotes"] == "run 2"
    assert kaggle.datasets[ref] == 2
    no_token_under(run, out)


def test_a_dataset_made_elsewhere_gets_a_version(tmp_path, fresh, cli_env):
    kaggle = fresh
    out, run = dataset_folder(tmp_path), tmp_path / "run"
    run.mkdir()
    kaggle.datasets[f"{OWNER}/topics-offline"] = 1
    commands, _ = send_dataset(out, f"{OWNER}/topics-offline", run, env=cli_env)
    assert len(commands) == 2 and "datasets version" in commands[1]
    assert VERSION in kaggle.endpoints() and CREATE not in kaggle.endpoints()


@pytest.mark.parametrize(("endpoint", "how", "words"), [
    (BLOB, 401, ["HTTP 401"]),
    ("datasets.DatasetApiService/GetDatasetStatus", "drop", ["connection"]),
], ids=["401-upload", "dropped-status"])
def test_dataset_failures_say_what_happened(tmp_path, fresh, cli_env, endpoint, how, words):
    kaggle = fresh
    out, run = dataset_folder(tmp_path), tmp_path / "run"
    run.mkdir()
    kaggle.failures[endpoint] = how
    with pytest.raises(KitError) as err:
        send_dataset(out, f"{OWNER}/topics-offline", run, env=cli_env)
    for word in words:
        assert word in str(err.value)
    assert TOKEN not in str(err.value)
    assert not (run / "kaggle.json").exists()


def test_submit_is_refused_for_a_file_competition(project, tmp_path):
    run = make_run(project)
    with pytest.raises(KitError, match=r"kaggle\.code_competition is false"):
        push_run(run, tmp_path / "nb", notebook="04_submit", submit=True)
    assert not (tmp_path / "nb").exists()


# ----------------------------------------------------------------------------- waits and checks


def test_push_waits_for_the_new_dataset_version_then_records_it(project, tmp_path, kaggle,
                                                                  cli_env, caplog):
    caplog.set_level("INFO")
    run = make_run(project)
    kaggle.datasets[DATASET] = 2  # a new version, still being processed for two polls
    kaggle.dataset_statuses[DATASET] = ["blobs_received", "blobs_decompressed", "ready"]
    sleeps: list[float] = []
    result = push_run(run, tmp_path / "nb", notebook="04_submit", dry_run=False, env=cli_env,
                      poll_seconds=60, sleep=sleeps.append)
    assert result.dataset_version == 2 and sleeps == [60, 60]
    calls = kaggle.endpoints()
    assert calls.count(DATASET_STATUS) == 3
    assert max(i for i, c in enumerate(calls) if c == DATASET_STATUS) < calls.index(SAVE)
    ref = f"{OWNER}/topics-04-submit"
    assert kaggle.kernel_sources[ref][1] == {DATASET: 2}  # Kaggle attached the new version
    assert "blobs_decompressed | 1m00s elapsed | limit 30m00s" in caplog.text
    versions = json.loads((run / "kaggle.json").read_text())["kernel_versions"]
    assert versions == [{"kernel": ref, "version": 1, "dataset": DATASET, "dataset_version": 2,
                         "model_sources": [], "pushed_utc": versions[0]["pushed_utc"]}]


@pytest.mark.parametrize(("statuses", "words"), [
    (["blobs_received"], ["still blobs_received after 2m00s", "--dataset-wait-minutes"]),
    (["blobs_received", "failed"], ["could not process", "status failed", "kit package"]),
], ids=["time-limit", "failed"])
def test_a_dataset_that_never_gets_ready_stops_the_push(project, tmp_path, kaggle, cli_env,
                                                        statuses, words):
    run = make_run(project)
    kaggle.dataset_statuses[DATASET] = statuses
    with pytest.raises(KitError) as err:
        push_run(run, tmp_path / "nb", notebook="04_submit", dry_run=False, env=cli_env,
                 poll_seconds=60, dataset_wait_minutes=2, sleep=lambda s: None)
    for word in words:
        assert word in str(err.value)
    assert SAVE not in kaggle.endpoints()  # nothing pushed that would run without its dataset


def test_a_missing_dataset_says_to_package_first(project, tmp_path, kaggle, cli_env):
    run = make_run(project)
    kaggle.datasets.clear()
    with pytest.raises(KitError, match=r"Kaggle has no dataset standin-user/topics-offline.*"
                                       r"python -m kit package"):
        push_run(run, tmp_path / "nb", notebook="04_submit", dry_run=False, env=cli_env,
                 sleep=lambda s: None)
    assert SAVE not in kaggle.endpoints()


def test_not_valid_dataset_sources_is_an_error_although_the_cli_exits_0(project, tmp_path,
                                                                        kaggle, cli_env):
    """Ready when checked, a new version started before the push (another `kit package`)."""
    run = make_run(project)
    kaggle.dataset_statuses[DATASET] = ["ready", "blobs_received"]
    with pytest.raises(KitError) as err:
        push_run(run, tmp_path / "nb", notebook="04_submit", dry_run=False, env=cli_env,
                 sleep=lambda s: None)
    said = str(err.value)
    assert f"could not attach dataset sources ['{DATASET}']" in said
    assert "kaggle datasets status" in said and "push again" in said
    assert STATUS not in kaggle.endpoints()  # the broken version is not followed
    # What Kaggle made is on record all the same: version 1, without the dataset.
    versions = json.loads((run / "kaggle.json").read_text())["kernel_versions"]
    assert versions[0]["version"] == 1 and kaggle.kernel_sources[f"{OWNER}/topics-04-submit"][
        1] == {}


def test_every_invalid_source_answer_of_the_cli_is_an_error_with_its_fix():
    # The CLI's own lines (kaggle_api_extended.py, kernels_push_cli).
    from kit.kaggle.commands import CliRun, failure

    said = ("The following are not valid competition sources and could not be added to the "
            "kernel: ['topicz']\nThe following are not valid kernel sources and could not be "
            "added to the kernel: ['alice/train']\nKernel version 3 successfully pushed.  "
            "Please check progress at http://localhost/code/alice/x")
    problem = failure(CliRun("kaggle kernels push -p nb", 0, said), "push", "page")
    assert problem is not None
    assert "competition sources ['topicz']" in problem and "rules" in problem
    assert "kernel sources ['alice/train']" in problem and "finished version" in problem


# ----------------------------------------------------------------------------- models travel


def adapter_run(project: Path, name: str = "", **kaggle) -> Path:
    """A run whose transformer export is a LoRA adapter (what kit.models.export writes)."""
    run = make_run(project, name, **kaggle)
    export = run / "models" / "transformer" / "model"
    export.mkdir(parents=True)
    (export / "kit_export.json").write_text(json.dumps({
        "kind": "adapter", "base_model": "/nowhere/SmolLM2-135M",
        "base_model_name": "HuggingFaceTB/SmolLM2-135M"}))
    (export / "adapter_model.safetensors").write_bytes(b"adapters")
    return run


def test_an_adapter_run_without_its_base_is_refused_naming_both_fixes(project, tmp_path):
    run = adapter_run(project)
    with pytest.raises(KitError) as err:
        push_run(run, tmp_path / "nb", notebook="04_submit")
    said = str(err.value)
    assert "LoRA adapter run" in said and "HuggingFaceTB/SmolLM2-135M" in said
    assert "--include-base" in said and "kaggle.model_sources" in said
    assert not (tmp_path / "nb").exists()
    elsewhere = adapter_run(project, "other-base",
                            model_sources=["alice/tinyllama/transformers/v1/1"])
    result = push_run(elsewhere, tmp_path / "nb", notebook="04_submit")  # a dry run
    assert "Warning: none of them is named like HuggingFaceTB/SmolLM2-135M" in result.base_model


def test_model_sources_reach_kernel_metadata_and_kaggle(project, tmp_path, kaggle, cli_env):
    handle = "huggingfacetb/smollm2/transformers/135m/1"
    run = adapter_run(project, model_sources=[handle])
    kaggle.models.add(handle)
    result = push_run(run, tmp_path / "nb", notebook="04_submit", dry_run=False, env=cli_env,
                      sleep=lambda s: None)
    meta = json.loads((tmp_path / "nb" / metadata.KERNEL_FILE).read_text())
    assert meta["model_sources"] == [handle]  # checked by the CLI's validate_model_instance...
    assert kaggle.find(SAVE).json()["modelDataSources"] == [handle]
    assert f"/kaggle/input/models/{handle}" in result.base_model
    versions = json.loads((run / "kaggle.json").read_text())["kernel_versions"]
    assert versions[-1]["model_sources"] == [handle]


def test_a_model_kaggle_did_not_attach_is_an_error_the_cli_does_not_print(project, tmp_path,
                                                                           kaggle, cli_env):
    handle = "alice/no-such-model/transformers/default/1"
    run = adapter_run(project, model_sources=[handle])
    with pytest.raises(KitError) as err:
        push_run(run, tmp_path / "nb", notebook="04_submit", dry_run=False, env=cli_env,
                 sleep=lambda s: None)
    said = str(err.value)
    assert f"did not attach the model sources ['{handle}']" in said
    assert "owner/model/framework/variation/version" in said
    assert "kernels.KernelsApiService/GetKernel" in kaggle.endpoints()
    assert STATUS not in kaggle.endpoints()


def test_a_model_handle_without_its_version_is_refused_at_params_time(project):
    with pytest.raises(KitError, match=r"owner/model/framework/variation/version"):
        make_run(project, model_sources=["google/gemma/transformers/2b"])


@pytest.mark.slow
def test_include_base_puts_a_lora_runs_base_in_the_dataset(project, tmp_path, capsys):
    """A real LoRA adapter export of a tiny Llama: `kit push --dataset DS --include-base` copies
    the base into DS, points the copied export at its Kaggle mount, and the export reloads from
    DS alone with the same predictions once the training machine's base is gone."""
    import shutil
    import subprocess
    import sys

    import torch
    from test_llm import LABEL_NAMES, load, logits_of, make_checkpoint

    from kit.models.export import export_for_kaggle, load_exported

    base = make_checkpoint(tmp_path / "tiny-llama", "llama")
    model, tok = load(base, dropout=0.0)
    expected = logits_of(model, tok)
    run = make_run(project)
    export_for_kaggle(model, tok, run / "models" / "transformer" / "model", LABEL_NAMES,
                      {"name": "topics", "transformer": {"model": str(base)}})
    freeze = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
                            capture_output=True, text=True, check=True).stdout
    from packaging import tags

    image = tmp_path / "image.txt"  # this environment as the image: only the kit's wheel
    image.write_text(f"# python: {sys.version.split()[0]}\n# platform: "
                     f"{next(t for t in tags.platform_tags() if 'manylinux_' in t)}\n{freeze}")
    notebook, dataset = tmp_path / "nb", tmp_path / "ds"
    code = kit_main(["push", str(run), "--out", str(notebook), "--dataset", str(dataset),
                     "--include-base", "--image-packages", str(image), "--dry-run",
                     "--notebook", "04_submit"])
    assert code == 0
    assert "its base model" in capsys.readouterr().out
    assert (dataset / "base_model" / "config.json").is_file()
    assert list((dataset / "base_model").glob("*.safetensors"))
    export = dataset / "run" / "models" / "transformer" / "model"
    info = json.loads((export / "kit_export.json").read_text())
    assert info["base_model"] == "/kaggle/input/topics-offline/base_model"
    assert info["trained_base_model"] == str(base)
    shutil.rmtree(base)
    reloaded, tok2, labels = load_exported(export, base_model=dataset / "base_model",
                                           device="cpu")
    assert labels == LABEL_NAMES
    torch.testing.assert_close(logits_of(reloaded, tok2), expected, atol=1e-6, rtol=0)


def test_a_cli_without_status_format_still_waits(monkeypatch):
    """kaggle < 2.2 has no `datasets status --format`: argparse refuses it (exit 2), and the
    bare `datasets status` prints the status alone (kaggle-api's dataset_status_cli)."""
    from kit.kaggle import dataset_wait
    from kit.kaggle.commands import CliRun

    calls: list[list[str]] = []
    answers = iter(["blobs_received", "ready"])

    def old_cli(args, what, page, *, env=None, check=True):
        calls.append(args)
        if "--format" in args:
            return CliRun("kaggle " + " ".join(args), 2, "usage: kaggle [-h] ...\nkaggle: error: "
                          "unrecognized arguments: --format json")
        return CliRun("kaggle " + " ".join(args), 0, next(answers))

    monkeypatch.setattr(dataset_wait, "run_kaggle", old_cli)
    sleeps: list[float] = []
    assert dataset_wait.wait_for_dataset(DATASET, None, 30, 600, sleeps.append) is None
    assert sleeps == [30] and calls[-1] == ["datasets", "status", DATASET]
