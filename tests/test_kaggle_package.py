"""`kit package` makes a dataset folder from which an internet-off notebook installs and predicts.

The completeness test stands a fresh venv in for the Kaggle notebook. The "image" is the
packages of this test venv (torch, transformers, ... exactly as installed here) MINUS the ones
named in LACKING: a folder of symlinks to each kept distribution's files, put on the fresh venv's
path by a .pth file, the way the Kaggle image's site-packages is simply there. The image list
`kit package` is given is the `pip list --format=freeze` of that same set, so the packager must
find and download what LACKING removed (and what those need), from PyPI, for the image's Python
and platform. Then, with every socket connect refused (a sitecustomize) and HF_HUB_OFFLINE=1,
the fresh venv installs `compkit` with `pip install --no-index --find-links DIR/wheels`, imports
it from its own site-packages (not this checkout), loads `DIR/model` and predicts the same
logits as the original model. What it does not prove: that the real Kaggle image matches the
shipped image file (derived from Kaggle's public sources, see kit/kaggle/kaggle_image.txt, and
replaced by `python -m kit kaggle-image --probe`), nor a CUDA build of torch. The planning
logic (the run's versions, the target's Python, the refusal) is tested with a fake downloader.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kit.cli import main as kit_main
from kit.config.params import Params
from kit.errors import KitError
from kit.kaggle import wheels

# Absent from the stand-in image: the kit itself, a pure-Python dependency of the kit (peft) and
# a compiled one that peft and transformers need (safetensors: a manylinux wheel).
LACKING = {"compkit", "peft", "safetensors"}
NOT_IMAGE = {"pip", "setuptools", "wheel"}  # the fresh venv brings its own

BLOCK_NETWORK = '''
import socket

def _refuse(*args, **kwargs):
    raise OSError("network disabled by the offline-install test")

socket.socket.connect = _refuse
socket.socket.connect_ex = _refuse
socket.create_connection = _refuse
'''

PREDICT = '''
import json, sys, torch
import kit, peft, safetensors
from kit.models.export import load_exported
model, tok, labels = load_exported(sys.argv[1], device="cpu")
with torch.no_grad():
    logits = model(**tok(["alpha beta gamma"], return_tensors="pt")).logits
print(json.dumps({"kit": kit.__file__, "peft": peft.__file__,
                  "safetensors": safetensors.__file__, "labels": labels,
                  "logits": logits[0].tolist()}))
'''


def _local_header() -> str:
    from packaging import tags

    return (f"# python: {sys.version.split()[0]}\n"
            f"# platform: {next(t for t in tags.platform_tags() if 'manylinux_' in t)}\n")


LOCAL_HEADER = _local_header()  # a stand-in image made of this venv is this interpreter's


def _canon(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def image_site(folder: Path) -> list[str]:
    """Symlinks to every installed distribution's files except LACKING; its freeze lines."""
    folder.mkdir(parents=True)
    site = Path(md.distribution("torch").locate_file(""))
    freeze = []
    for dist in md.distributions():
        name = _canon(dist.metadata["Name"])
        if name in LACKING | NOT_IMAGE or Path(dist.locate_file("")) != site:
            continue
        freeze.append(f"{dist.metadata['Name']}=={dist.version}")
        for top in {Path(str(f)).parts[0] for f in dist.files or []}:
            if top in ("..", "__pycache__") or top.startswith("__editable__"):
                continue
            link = folder / top
            if not link.exists() and (site / top).exists():
                link.symlink_to(site / top)
    # This venv's torch declares setuptools>=77.0.3 while the venv holds an older setuptools, a
    # quirk of this machine (Kaggle's image is consistent). The stand-in image gets a setuptools
    # that satisfies torch, so the image is consistent too; installing it needs the index once,
    # while the image is built, never during the offline install.
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(folder / "_setuptools"), "setuptools>=77.0.3"], check=True)
    for entry in (folder / "_setuptools").iterdir():
        entry.rename(folder / entry.name)
    version = next(p.name.split("-")[1] for p in folder.glob("setuptools-*.dist-info"))
    freeze.append(f"setuptools=={version}")
    return sorted(set(freeze))


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """A run folder with resolved params and an exported tiny classifier."""
    import resume_worker as rw
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from kit.models.export import export_for_kaggle

    tmp = tmp_path_factory.mktemp("pkg")
    base = rw.build_tiny_model(tmp / "bert")
    run = tmp / "outputs" / "tiny"
    run.mkdir(parents=True)
    params = Params().to_dict()
    params.update(name="tiny", kaggle={**params["kaggle"], "owner": "alice"})
    (run / "params.yaml").write_text(yaml.safe_dump(params))
    (run / "decision_rule.json").write_text('{"kind": "argmax"}')
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=2)
    tok = AutoTokenizer.from_pretrained(base)
    export_for_kaggle(model, tok, run / "models" / "transformer" / "model", ["ham", "spam"],
                      params)
    (run / "models" / "transformer" / "checkpoints").mkdir()  # never shipped
    (run / "models" / "transformer" / "checkpoints" / "big.bin").write_bytes(b"x" * 1000)
    return run


def test_image_list_parsing_and_the_gpu_stack_is_never_shipped(tmp_path: Path):
    listed = tmp_path / "image.txt"
    listed.write_text("# header\ntorch==2.6.0+cu124\nNumPy==1.26.4\n\n")
    image = wheels.read_image_packages(listed)
    assert image == {"torch": "2.6.0", "numpy": "1.26.4"}
    from packaging.requirements import Requirement

    with pytest.raises(KitError, match="never replaces"):
        wheels.download_missing([Requirement("torch>=9")], tmp_path / "w", image)
    plan = wheels.download_missing([Requirement("numpy>=1.20"), Requirement("torch")],
                                   tmp_path / "w", image)
    assert plan.downloaded == {} and set(plan.provided) == {"numpy", "torch"}
    shipped = wheels.read_image_packages()
    assert {"torch", "transformers", "numpy", "pandas"} <= set(shipped)


@pytest.mark.slow
def test_the_package_installs_and_loads_the_model_with_no_index_and_no_network(
        run_folder: Path, tmp_path: Path, capsys):
    image = tmp_path / "image"
    freeze = image_site(image)
    image_list = tmp_path / "image_packages.txt"
    image_list.write_text("# the stand-in image: this interpreter\n" + LOCAL_HEADER
                          + "\n".join(freeze) + "\n")

    out = tmp_path / "dataset"
    code = kit_main(["package", str(run_folder), "--out", str(out), "--dry-run",
                     "--image-packages", str(image_list)])
    printed = capsys.readouterr().out
    assert code == 0 and f"dataset alice/tiny-offline: {out}" in printed
    assert f"kaggle datasets create -p {out} --dir-mode zip" in printed
    got = {p.name.split("-")[0].lower() for p in (out / "wheels").glob("*.whl")}
    assert got == {"compkit", "peft", "safetensors"}, got  # exactly what the image lacks
    for name in ("dataset-metadata.json", "params.yaml", "kit_bootstrap.py",
                 "run/params.yaml", "run/decision_rule.json",
                 "run/models/transformer/model/kit_export.json"):
        assert (out / name).is_file(), name
    assert not (out / "run" / "models" / "transformer" / "checkpoints").exists()
    assert not any("torch" in p.name for p in (out / "wheels").iterdir())

    venv = tmp_path / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig."
                                "get_paths()['purelib'])"], capture_output=True, text=True,
                               check=True).stdout.strip())
    (site / "kaggle_image.pth").write_text(f"{image}\n")
    # The venv's own setuptools would shadow the image's (see image_site).
    subprocess.run([str(python), "-m", "pip", "uninstall", "-q", "-y", "setuptools"], check=True)
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(BLOCK_NETWORK)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONPATH": str(block),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PIP_NO_CACHE_DIR": "1",
           "OMP_NUM_THREADS": "1"}
    probe = subprocess.run([str(python), "-c", "import socket; socket.create_connection(("
                            "'pypi.org', 443))"], capture_output=True, text=True, env=env)
    assert "network disabled" in probe.stderr  # the block is in force

    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-index", "--find-links", str(out / "wheels"),
         "compkit"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert install.returncode == 0, install.stdout + install.stderr
    assert "torch" not in install.stdout.split("Successfully installed")[-1]

    model_dir = out / "run" / "models" / "transformer" / "model"
    done = subprocess.run([str(python), "-c", PREDICT, str(model_dir)], capture_output=True,
                          text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    for module in ("kit", "peft", "safetensors"):
        assert seen[module].startswith(str(site)), seen[module]  # from the wheels, not here
    assert seen["labels"] == ["ham", "spam"]

    import torch

    from kit.models.export import load_exported

    model, tok, _ = load_exported(model_dir, device="cpu")
    with torch.no_grad():
        expected = model(**tok(["alpha beta gamma"], return_tensors="pt")).logits[0].tolist()
    assert seen["logits"] == pytest.approx(expected, abs=1e-5)


@pytest.mark.slow
def test_one_command_writes_the_dataset_and_the_notebook_folders(run_folder: Path,
                                                                 tmp_path: Path, capsys):
    """`kit push RUN --out NB --dataset DS --dry-run`: both folders, every kaggle command."""
    freeze = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
                            capture_output=True, text=True, check=True).stdout
    image_list = tmp_path / "image.txt"  # this environment as the image: only the kit's wheel
    image_list.write_text(LOCAL_HEADER + freeze)
    notebook, dataset = tmp_path / "notebook", tmp_path / "dataset"
    code = kit_main(["push", str(run_folder), "--out", str(notebook), "--dataset", str(dataset),
                     "--image-packages", str(image_list), "--dry-run"])
    printed = capsys.readouterr().out
    assert code == 0
    assert [p.name.split("-")[0] for p in (dataset / "wheels").glob("*.whl")] == ["compkit"]
    assert (dataset / "run" / "models" / "transformer" / "model" / "kit_export.json").is_file()
    assert (notebook / "kernel-metadata.json").is_file()
    assert sorted(p.suffix for p in notebook.iterdir()) == [".ipynb", ".json"]
    assert f"kaggle datasets create -p {dataset} --dir-mode zip" in printed
    assert f"kaggle kernels push -p {notebook}" in printed


# --- Planning for the target image, at the run's versions (a fake downloader: no network).

def _fake_wheel(dest: Path, name: str, version: str, python: str, requires: list[str]) -> Path:
    """A wheel file with just the METADATA the planner reads, tagged for `python`."""
    import zipfile

    tag = "cp" + python.replace(".", "")
    wheel = dest / f"{name.replace('-', '_')}-{version}-{tag}-{tag}-manylinux_2_17_x86_64.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        meta = [f"Name: {name}", f"Version: {version}"] + [f"Requires-Dist: {r}" for r in requires]
        zf.writestr(f"{name}-{version}.dist-info/METADATA", "\n".join(meta) + "\n")
    return wheel


class FakeIndex:
    """An index of a few packages; records each download call as (specs, target python)."""

    def __init__(self, packages: dict[str, dict[str, list[str]]]) -> None:
        self.packages, self.calls = packages, []

    def __call__(self, specs: list[str], dest: Path, target: wheels.Target) -> None:
        from packaging.requirements import Requirement

        self.calls.append((list(specs), target.python_version))
        for spec in specs:
            req = Requirement(spec)
            found = sorted((v for v in self.packages[req.name] if req.specifier.contains(v)),
                           key=lambda v: tuple(int(x) for x in v.split(".")))
            _fake_wheel(dest, req.name, found[-1], target.python_version,
                        self.packages[req.name][found[-1]])


def test_the_image_file_decides_the_target_python_and_platform(tmp_path: Path):
    from kit.kaggle.image import read_image

    shipped = wheels.Target.for_image(read_image())
    assert shipped.python_version == "3.12"  # Kaggle/docker-python PR #1496
    assert shipped.platforms[0] == "manylinux_2_35_x86_64"
    assert "manylinux2014_x86_64" in shipped.platforms
    assert "manylinux_2_36_x86_64" not in shipped.platforms
    other = tmp_path / "image.txt"
    other.write_text("# python: 3.13.1\n# platform: manylinux_2_28_x86_64\nnumpy==2.3.0\n")
    target = wheels.Target.for_image(read_image(other))
    assert target.pip_args()[:2] == ["--python-version", "3.13"]
    assert target.platforms[0] == "manylinux_2_28_x86_64"
    with pytest.raises(KitError, match=r"# python: 3\.12\.13"):
        (tmp_path / "bare.txt").write_text("numpy==2.3.0\n")
        read_image(tmp_path / "bare.txt")


def test_what_the_image_lacks_is_pinned_to_the_run_versions(tmp_path: Path):
    from packaging.requirements import Requirement

    index = FakeIndex({
        "transformers": {"5.23.0": ["huggingface-hub>=1.0", "numpy>=1.17"], "5.25.0": []},
        "peft": {"0.21.2": ["transformers"], "0.22.0": []},
        "huggingface-hub": {"1.2.0": [], "1.3.0": []},
    })
    image = {"numpy": "2.0.2", "transformers": "5.0.0", "torch": "2.10.0"}
    run = tmp_path / "run"
    run.mkdir()
    (run / "env.json").write_text(json.dumps({"packages": {"transformers": "5.23.0",
                                                           "torch": "2.13.0", "peft": None}}))
    lock = tmp_path / "lock.txt"
    lock.write_text("# lock\npeft==0.21.2\ntransformers==5.22.0\n")
    versions = wheels.run_versions(run, lock)
    assert versions["transformers"] == "5.23.0" and versions["peft"] == "0.21.2"
    target = wheels.Target("3.12")
    plan = wheels.download_missing(
        [Requirement("transformers>=5.23,<6"), Requirement("peft>=0.14"),
         Requirement("numpy>=1.26")], tmp_path / "w", image, target, versions=versions,
        download=index)
    got = {name: parse(path.name) for name, path in plan.downloaded.items()}
    # The run's versions, not the index's newest (5.25.0, 0.22.0); what the run did not record
    # (huggingface-hub) is the newest that fits; what the image has (numpy) is not shipped.
    assert got == {"transformers": ("5.23.0", "cp312"), "peft": ("0.21.2", "cp312"),
                   "huggingface-hub": ("1.3.0", "cp312")}
    assert plan.provided == {"numpy": "2.0.2"}
    assert index.calls[0] == (["peft==0.21.2", "transformers==5.23.0"], "3.12")


def parse(filename: str) -> tuple[str, str]:
    from packaging.utils import parse_wheel_filename

    _, version, _, tags = parse_wheel_filename(filename)
    return str(version), next(iter(tags)).interpreter


def test_a_package_without_a_wheel_for_the_target_is_refused_by_name(tmp_path: Path,
                                                                     monkeypatch):
    asked = []

    def fake_pip(args: list[str], what: str) -> str:
        asked.append([a for a in args if "==" in a])
        if any(a.startswith("regex") for a in args):
            raise KitError("pip could not download:\nERROR: Could not find a version that "
                           "satisfies the requirement regex==2024.1.1\nFix: ...")
        return ""

    monkeypatch.setattr(wheels, "_pip", fake_pip)
    with pytest.raises(KitError) as err:
        wheels.pip_download(["peft==0.21.2", "regex==2024.1.1"], tmp_path, wheels.Target())
    message = str(err.value)
    assert message.startswith("No wheel of regex==2024.1.1 exists for the Kaggle image "
                              "(CPython 3.12 on manylinux_2_35_x86_64)")
    assert "Could not find a version" in message and "--build-on-kaggle" in message
    assert asked[-1] == ["regex==2024.1.1"]  # the batch failed, then one by one


@pytest.mark.slow
def test_the_target_not_this_interpreter_decides_the_wheel_tags(tmp_path: Path):
    """Real downloads: the same requirement resolved for Python 3.12 and 3.13 from here (3.11)."""
    from packaging.requirements import Requirement

    versions = wheels.run_versions(None, Path(__file__).parents[1] / "requirements-lock.txt")
    for python in ("3.12", "3.13"):
        plan = wheels.download_missing([Requirement("pyyaml>=6")], tmp_path / python, {},
                                       wheels.Target(python), versions=versions)
        version, interpreter = parse(plan.downloaded["pyyaml"].name)
        assert (version, interpreter) == (versions["pyyaml"], "cp" + python.replace(".", ""))


@pytest.mark.slow
def test_build_on_kaggle_ships_the_kit_wheel_and_a_builder_that_runs(run_folder: Path,
                                                                     tmp_path: Path, capsys):
    """--build-on-kaggle --dry-run: the dataset holds only the kit's wheel; the builder notebook
    (internet on, the dataset attached) is then run here, this venv standing in for the image."""
    out = tmp_path / "dataset"
    code = kit_main(["package", str(run_folder), "--out", str(out), "--dry-run",
                     "--build-on-kaggle"])
    printed = capsys.readouterr().out
    assert code == 0
    assert [p.name.split("-")[0] for p in (out / "wheels").glob("*.whl")] == ["compkit"]
    builder = tmp_path / "dataset-builder"
    meta = json.loads((builder / "kernel-metadata.json").read_text())
    assert meta["id"] == "alice/tiny-offline-wheel-builder" and meta["enable_internet"] is True
    assert meta["dataset_sources"] == ["alice/tiny-offline"]
    assert f"kaggle kernels push -p {builder}" in printed
    source = json.loads((builder / "builder.ipynb").read_text())["cells"][0]["source"]
    lock = wheels.read_image_packages(Path(__file__).parents[1] / "requirements-lock.txt")
    assert f'"transformers": "{lock["transformers"]}"' in source  # the run's versions

    work = tmp_path / "working"
    work.mkdir()
    done = subprocess.run([sys.executable, "-c", source], cwd=work, capture_output=True,
                          text=True, env={**os.environ, "KIT_KAGGLE_INPUT": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    # Exactly what pip, asked inside this "image", would add (here only this venv's quirk: a
    # setuptools older than its torch declares, see image_site), plus the kit's own wheel.
    adds = {_canon(i["metadata"]["name"])
            for i in json.loads((work / "report.json").read_text())["install"]}
    got = {_canon(p.name.split("-")[0]) for p in (work / "wheels").glob("*.whl")}
    assert got == adds | {"compkit"} and "torch" not in got and "transformers" not in got
    assert "torch==" in (work / "constraints.txt").read_text()
