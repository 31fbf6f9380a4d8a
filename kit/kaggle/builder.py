"""`kit package --build-on-kaggle`: the wheels downloaded inside the real Kaggle image.

The exact-image path, for when the image file may be out of date: the dataset carries only the
kit's wheel and the run; an internet-on builder notebook attached to that dataset asks pip, inside
the real image, what installing the kit would add (`pip install --dry-run --report`, with the
image's torch held and what the image lacks pinned to the run's versions), downloads exactly those
wheels into its output's `wheels/`, and the inference notebook attaches that output as a
`kernel_sources` entry (mounted under /kaggle/input like a dataset; the bootstrap cell looks in
every `wheels/` folder there).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from kit.kaggle import metadata

BUILDER_SUFFIX = "wheel-builder"
STATE_KEY = "wheel_builder"  # in the run folder's kaggle.json: {"ref", "version"}

BUILDER_CODE = '''# compkit wheel builder (kit/kaggle/builder.py): the wheels this image lacks.
import glob, json, os, shutil, subprocess, sys
from importlib import metadata

PINS = {pins}  # the versions the run was made with (its env.json, else the lock)
INPUT = os.environ.get("KIT_KAGGLE_INPUT", "/kaggle/input")
kit = sorted(glob.glob(os.path.join(INPUT, "**", "wheels", "compkit-*.whl"), recursive=True))
if not kit:
    raise SystemExit(f"No compkit wheel under {{INPUT}}: attach the dataset `kit package` made.")
os.makedirs("wheels", exist_ok=True)  # a Kaggle notebook runs in /kaggle/working
shutil.copy(kit[-1], "wheels")


def installed(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


# Pin only what the image lacks; hold the image's torch (its CUDA build).
pins = [f"{{n}}=={{v}}" for n, v in PINS.items() if installed(n) is None]
pins += [f"{{n}}=={{installed(n)}}" for n in ("torch",) if installed(n)]
with open("constraints.txt", "w") as f:
    f.write("\\n".join(pins) + "\\n")
subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "-q", "--report",
                "report.json", "-c", "constraints.txt", kit[-1]], check=True)
with open("report.json") as f:
    adds = [i["metadata"] for i in json.load(f)["install"]]
need = [f"{{m['name']}}=={{m['version']}}" for m in adds if m["name"].lower() != "compkit"]
if need:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                    "-q", "-d", "wheels", *need], check=True)
print("wheels:", *sorted(os.listdir("wheels")), sep="\\n  ")
'''


@dataclass
class Builder:
    """The builder notebook's folder and kernel ref, and the kaggle commands that run it."""

    folder: Path
    ref: str
    commands: list[str]


def builder_code(pins: dict[str, str]) -> str:
    """The builder cell with the run's versions baked in."""
    return BUILDER_CODE.format(pins=json.dumps(dict(sorted(pins.items())), indent=1))


def write_builder(folder: Path, owner: str, dataset_slug: str, dataset_ref: str,
                  pins: dict[str, str], *, private: bool = True,
                  accelerator: str = "t4x2") -> Builder:
    """The builder notebook folder (notebook + kernel-metadata.json, checked by the CLI)."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*"):
        if old.is_file():
            old.unlink()
    slug = f"{dataset_slug}-{BUILDER_SUFFIX}"
    notebook = {"cells": [{"cell_type": "code", "execution_count": None, "id": "build",
                           "metadata": {}, "outputs": [], "source": builder_code(pins)}],
                "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python",
                                            "name": "python3"},
                             "language_info": {"name": "python"}},
                "nbformat": 4, "nbformat_minor": 5}
    (folder / "builder.ipynb").write_text(json.dumps(notebook, indent=1) + "\n")
    # The accelerator decides the image (GPU or CPU build): the same one as inference.
    metadata.write_metadata(folder, metadata.KERNEL_FILE, metadata.kernel_metadata(
        owner, slug, "builder.ipynb", private=private, accelerator=accelerator, internet=True,
        dataset_sources=[dataset_ref]))
    metadata.validate(folder, "kernel")
    ref = f"{owner}/{slug}"
    commands = [shlex.join(c) for c in (["kaggle", "kernels", "push", "-p", str(folder)],
                                        ["kaggle", "kernels", "status", ref])]
    return Builder(folder, ref, commands)


def builder_sources(state: dict) -> list[str]:
    """`kernel_sources` for the inference notebook: the builder's output, when one was pushed."""
    ref = (state.get(STATE_KEY) or {}).get("ref")
    return [ref] if ref else []
