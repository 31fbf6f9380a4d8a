"""`python -m kit kaggle-image --probe`: push the probe notebook, wait, fetch, rewrite the file.

Against the real kaggle CLI and the stand-in Kaggle API (tests/kaggle_standin/server.py, on
127.0.0.1:80: run inside `unshare -n`). While the stand-in says RUNNING, the test executes the
code cell of the notebook the CLI actually pushed (the `text` of SaveKernel) with this machine's
Python, and the stand-in serves the file it wrote as the kernel's output: the rewritten image
file then says this interpreter's version, platform tag and packages.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kit.cli import main as kit_main
from kit.errors import KitError
from kit.kaggle import image
from tests.conftest import standin_cli_env

SAVE = "kernels.KernelsApiService/SaveKernel"


@pytest.fixture
def cli_env(tmp_path, monkeypatch) -> dict[str, str]:
    return standin_cli_env(tmp_path, monkeypatch, "tok-probe-1234abcd")


def test_the_probe_dry_run_writes_an_internet_on_notebook(tmp_path: Path, capsys):
    target = tmp_path / "image.txt"
    code = kit_main(["kaggle-image", "--probe", "--dry-run", "--folder", str(tmp_path / "nb"),
                     "--file", str(target), "--owner", "alice"])
    printed = capsys.readouterr().out
    assert code == 0 and not target.exists()
    meta = json.loads((tmp_path / "nb" / "kernel-metadata.json").read_text())
    assert meta["id"] == "alice/compkit-image-probe" and meta["enable_internet"] is True
    assert f"kaggle kernels push -p {tmp_path / 'nb'}" in printed
    notebook = json.loads((tmp_path / "nb" / "probe.ipynb").read_text())
    assert "pip\", \"list\", \"--format=freeze\"" in notebook["cells"][0]["source"]


def test_without_a_probe_the_shipped_file_is_shown_with_its_source(capsys):
    assert kit_main(["kaggle-image"]) == 0
    printed = capsys.readouterr().out
    assert "Python 3.12.13, manylinux_2_35_x86_64" in printed
    assert "Kaggle/docker-python@" in printed and "googlecolab/backend-info@" in printed


def test_the_probe_rewrites_the_image_file_from_the_notebook_output(standin, cli_env,
                                                                    tmp_path: Path):
    state = standin.state
    state.requests.clear()
    state.kernel_statuses["standin-user/compkit-image-probe"] = ["RUNNING", "COMPLETE"]
    sandbox = tmp_path / "kaggle-working"
    sandbox.mkdir()

    def run_pushed_notebook(seconds: float) -> None:
        """The notebook Kaggle received, run here; its output served as the kernel's."""
        pushed = json.loads(state.find(SAVE).json()["text"])
        code = "".join(pushed["cells"][0]["source"])
        subprocess.run([sys.executable, "-c", code], cwd=sandbox, check=True)
        state.kernel_outputs["compkit-image-probe"] = {
            image.PROBE_OUTPUT: (sandbox / image.PROBE_OUTPUT).read_bytes()}

    target = tmp_path / "kaggle_image.txt"
    result = image.probe(tmp_path / "nb", owner="standin-user", target=target, dry_run=False,
                         env=cli_env, poll_seconds=0, sleep=run_pushed_notebook)
    assert state.find(SAVE).json()["enableInternet"] is True
    written = image.read_image(target)
    assert written.python == sys.version.split()[0]
    from packaging import tags

    assert written.platform == next(t for t in tags.platform_tags() if "manylinux_" in t)
    import importlib.metadata as md

    assert written.packages["packaging"] == md.version("packaging")
    assert "compkit-image-probe version 1" in written.source[0]
    assert result.written == target and len(written.packages) > 50


def test_a_probe_that_fails_says_so_with_its_log(standin, cli_env, tmp_path: Path):
    state = standin.state
    state.kernel_statuses["standin-user/compkit-image-probe"] = ["ERROR"]
    state.kernel_outputs["compkit-image-probe"] = {}
    target = tmp_path / "kaggle_image.txt"
    with pytest.raises(KitError, match=r"ended ERROR without kaggle_image_probe\.json"):
        image.probe(tmp_path / "nb", owner="standin-user", target=target, dry_run=False,
                    env=cli_env, poll_seconds=0, sleep=lambda s: None)
    assert not target.exists()


def test_build_on_kaggle_pushes_the_builder_and_push_attaches_its_output(
        standin, cli_env, project: Path, tmp_path: Path, monkeypatch):
    """The kaggle side of --build-on-kaggle (the builder's own run: test_kaggle_package.py)."""
    import zipfile

    from kit.core.rundir import open_run
    from kit.kaggle import wheels
    from kit.kaggle.package import load_state, package_run
    from kit.kaggle.push import prepare_push

    def kit_wheel(root: Path, dest: Path) -> Path:  # no build (no index in this namespace)
        dest.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(dest / "compkit-0.1.0-py3-none-any.whl", "w") as zf:
            zf.writestr("compkit-0.1.0.dist-info/METADATA", "Name: compkit\nVersion: 0.1.0\n")
        return dest / "compkit-0.1.0-py3-none-any.whl"

    monkeypatch.setattr(wheels, "build_kit_wheel", kit_wheel)
    state = standin.state
    state.requests.clear()
    run = open_run("params/topics.yaml", overrides={"kaggle.owner": "standin-user"}).path
    packed = package_run(run, tmp_path / "ds", dry_run=False, env=cli_env,
                         build_on_kaggle=True)
    builder = "standin-user/topics-offline-wheel-builder"
    assert packed.builder.ref == builder
    saved = state.find(SAVE).json()
    assert saved["slug"] == builder and saved["enableInternet"] is True
    assert saved["datasetDataSources"] == ["standin-user/topics-offline"]
    assert load_state(run)["wheel_builder"] == {"ref": builder, "version": 1}
    pushed = prepare_push(run, tmp_path / "nb", dry_run=True, env=cli_env)
    meta = json.loads((pushed.folder / "kernel-metadata.json").read_text())
    assert meta["kernel_sources"] == [builder] and meta["enable_internet"] is False
