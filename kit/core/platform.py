"""Where the kit runs (Kaggle batch or interactive, Colab with or without Drive, plain)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Kaggle mounts attached competitions, datasets and models here; tests point it elsewhere.
KAGGLE_INPUT_ENV = "KIT_KAGGLE_INPUT"
KAGGLE_WORKING = "/kaggle/working"
# ... and its working folder (the local Kaggle of the tests runs notebooks in a sandbox folder).
KAGGLE_WORKING_ENV = "KIT_KAGGLE_WORKING"
# Kaggle keeps at most this much in /kaggle/working (the notebook's saved output).
KAGGLE_DISK_GB = 20.0
COLAB_DRIVE = "/content/drive/MyDrive"


def kaggle_input(env: Mapping[str, str] | None = None) -> Path:
    """Kaggle's read-only input folder (`/kaggle/input`, or `$KIT_KAGGLE_INPUT`)."""
    return Path((os.environ if env is None else env).get(KAGGLE_INPUT_ENV, "/kaggle/input"))


def kaggle_working_dir(env: Mapping[str, str] | None = None) -> Path:
    """Kaggle's saved output folder (`/kaggle/working`, or `$KIT_KAGGLE_WORKING`)."""
    return Path((os.environ if env is None else env).get(KAGGLE_WORKING_ENV, KAGGLE_WORKING))


def kaggle_path(path: str | Path, env: Mapping[str, str] | None = None) -> Path:
    """`path` with a leading `/kaggle/input` or `/kaggle/working` moved to the overridden roots.

    Notebooks pushed to Kaggle carry Kaggle's absolute folders (baked params); where the roots
    are overridden (`$KIT_KAGGLE_INPUT`, `$KIT_KAGGLE_WORKING`) the same paths land there.
    """
    path = Path(path)
    for fixed, root in (("/kaggle/input", kaggle_input(env)),
                        (KAGGLE_WORKING, kaggle_working_dir(env))):
        try:
            return root / path.relative_to(fixed)
        except ValueError:
            continue
    return path


def on_kaggle(env: Mapping[str, str] | None = None) -> bool:
    """True inside a Kaggle notebook (Kaggle sets KAGGLE_KERNEL_RUN_TYPE)."""
    return bool((os.environ if env is None else env).get("KAGGLE_KERNEL_RUN_TYPE"))


def on_colab(env: Mapping[str, str] | None = None) -> bool:
    """True inside Google Colab (Colab sets COLAB_RELEASE_TAG and ships google.colab).

    Never inside a Kaggle notebook: Kaggle's image is built FROM Colab's runtime image
    (Kaggle/docker-python Dockerfile.tmpl), so it inherits COLAB_RELEASE_TAG and the google.colab
    package; kagglehub stopped trusting that variable for this reason (Kaggle/kagglehub PR #230).
    """
    env = os.environ if env is None else env
    if on_kaggle(env):
        return False
    in_colab = bool(env.get("COLAB_RELEASE_TAG") or env.get("COLAB_GPU"))
    return in_colab or "google.colab" in sys.modules


def find_input(path: Path, env: Mapping[str, str] | None = None) -> Path | None:
    """A missing `/kaggle/input/<dataset>/...` path found where Kaggle mounted it instead.

    Kaggle has mounted an attached dataset at `/kaggle/input/<slug>` and, in newer sessions,
    deeper (`/kaggle/input/datasets/<owner>/<slug>`); None when `path` is not under the input
    folder or nothing matches.
    """
    root = kaggle_input(env)
    path = kaggle_path(path, env)
    if path.exists():
        return path
    try:
        rel = path.relative_to(root)
    except ValueError:
        return None
    if not root.is_dir():
        return None
    found = sorted(root.glob(f"**/{rel.as_posix()}"))
    return found[0] if found else None


@dataclass(frozen=True)
class Where:
    """The platform a run is on and the folders that follow from it (recorded in env.json)."""

    platform: str  # "kaggle", "colab" or "plain"
    mode: str | None  # Kaggle: "interactive" or "batch" (a committed/pushed version); else None
    input_dir: Path | None  # read-only inputs (Kaggle: /kaggle/input)
    working_dir: Path  # where outputs go (Kaggle: /kaggle/working, kept after the session)
    checkpoint_dir: Path | None  # survives a disconnect; None: the run folder (see warnings)
    drive_mounted: bool = False
    disk_budget_gb: float | None = None  # what the platform keeps of working_dir
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for env.json."""
        out = asdict(self)
        for key in ("input_dir", "working_dir", "checkpoint_dir"):
            out[key] = None if out[key] is None else str(out[key])
        return out


def folder_size_gb(path: Path) -> float:
    """Total size of the files under `path` in GB (0 when it does not exist)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).lstat().st_size
            except OSError:
                continue
    return total / 1e9


def disk_warning(working_dir: Path, budget_gb: float, share: float = 0.8) -> str:
    """A warning when `working_dir` holds more than `share` of the platform's budget, else ""."""
    used = folder_size_gb(working_dir)
    if used < share * budget_gb:
        return ""
    return (f"{working_dir} holds {used:.1f} GB of the {budget_gb:g} GB the platform keeps. "
            "Fix: delete old checkpoints (transformer.save_total_limit: 1), or move them to "
            "platform.checkpoint_dir; past the limit the notebook's output is lost.")


def detect(
    env: Mapping[str, str] | None = None,
    *,
    input_dir: str | Path | None = None,
    working_dir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    drive: str | Path = COLAB_DRIVE,
    kaggle_working: str | Path | None = None,
    disk_budget_gb: float = KAGGLE_DISK_GB,
) -> Where:
    """Where the kit runs now; explicit folders (params `platform.*`) override the detected ones.

    `drive` and `kaggle_working` are the platforms' fixed folders, parameters only so tests can
    fake them with temporary folders (`kaggle_working` None: `kaggle_working_dir(env)`).
    """
    env = os.environ if env is None else env
    warnings: list[str] = []
    given_input = Path(input_dir) if input_dir else None
    given_work = Path(working_dir) if working_dir else None
    given_ckpt = Path(checkpoint_dir) if checkpoint_dir else None
    if on_kaggle(env):
        run_type = env.get("KAGGLE_KERNEL_RUN_TYPE", "").lower()
        mode = "batch" if run_type == "batch" else "interactive"
        work = given_work or Path(kaggle_working or kaggle_working_dir(env))
        where = Where("kaggle", mode, given_input or kaggle_input(env), work, given_ckpt,
                      disk_budget_gb=disk_budget_gb, warnings=warnings)
        problem = disk_warning(work, disk_budget_gb)
        if problem:
            warnings.append(problem)
    elif on_colab(env):
        mounted = Path(drive).is_dir()
        ckpt = given_ckpt or (Path(drive) / "compkit" / "checkpoints" if mounted else None)
        if ckpt is None:
            warnings.append(
                "Colab loses its disk at disconnect and Google Drive is not mounted, so "
                "checkpoints will not survive. Fix: run `from google.colab import drive; "
                "drive.mount('/content/drive')`, or set platform.checkpoint_dir.")
        where = Where("colab", None, given_input, given_work or Path("/content"), ckpt,
                      drive_mounted=mounted, warnings=warnings)
    else:
        where = Where("plain", None, given_input, given_work or Path.cwd(), given_ckpt,
                      warnings=warnings)
    for warning in warnings:
        log.warning(warning)
    return where
