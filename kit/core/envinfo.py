"""What machine and software a run used: Python, package versions, git commit, hardware."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from kit.core.platform import Where, detect, on_colab, on_kaggle

# Cache hits and misses in this process ("data hit", "tokens miss"...), for env.json; the data
# and token caches count into it (kit.data.cache.EVENTS is this counter).
CACHE_EVENTS: Counter[str] = Counter()

PACKAGES = (
    "compkit", "torch", "transformers", "tokenizers", "peft", "accelerate", "bitsandbytes",
    "unsloth", "datasets", "scikit-learn", "numpy", "pandas", "matplotlib", "papermill", "kaggle",
)


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each package, None when absent (read from metadata, not imported)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state(root: Path) -> dict[str, Any]:
    """Commit and dirty flag of the repo at `root` (None outside a git checkout)."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                                 timeout=10, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


# What a GPU driver leaves on Linux, without which torch.cuda sees no device: the NVIDIA kernel
# module's /proc/driver/nvidia and device nodes (also what nvidia-container-toolkit mounts into
# Docker, as on Kaggle and Colab), WSL2's /dev/dxg, and ROCm's /dev/kfd (torch.cuda on AMD).
GPU_DRIVER_PATHS = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg",
                    "/dev/kfd")


def gpu_driver_present() -> bool:
    """Whether this machine may have a GPU for torch: a driver's trace on Linux; elsewhere (no
    such traces to read) always True, so torch is asked."""
    return not sys.platform.startswith("linux") or any(
        os.path.exists(p) for p in GPU_DRIVER_PATHS)


def hardware_summary() -> dict[str, Any]:
    """CPU, memory and (when torch sees one) GPU of this machine."""
    info: dict[str, Any] = {
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
        info["memory_gb"] = round(pages * page_size / 1e9, 1)
    except (ValueError, OSError, AttributeError):
        info["memory_gb"] = None
    if "torch" not in sys.modules and not gpu_driver_present():
        info["gpus"] = []  # torch could see none; importing it only to ask cost ~3 s a notebook
        return info
    try:
        import torch

        if torch.cuda.is_available():
            info["gpus"] = [
                {"name": torch.cuda.get_device_name(i),
                 "capability": list(torch.cuda.get_device_capability(i))}
                for i in range(torch.cuda.device_count())
            ]
        else:
            info["gpus"] = []
    except ImportError:
        info["gpus"] = None
    return info


LOCK_FILE = "requirements-lock.txt"


def lock_state(root: Path) -> dict[str, Any] | None:
    """How the installed packages compare with the repo's lock (None without a lock file).

    `matches` is True when every locked package is installed at its locked version (a local
    label such as torch's "+cpu" is ignored); `differs` lists the others as "name: installed
    (locked X)".
    """
    path = root / LOCK_FILE
    if not path.is_file():
        return None
    differs = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" not in line:
            continue
        name, locked = (part.strip() for part in line.split("==", 1))
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed is None or installed.split("+", 1)[0] != locked:
            differs.append(f"{name}: {installed} (locked {locked})")
    return {"file": LOCK_FILE, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "matches": not differs, "differs": differs}


def environment(root: Path, where: Where | None = None) -> dict[str, Any]:
    """Everything env.json records; `where` defaults to `detect()` with no overrides."""
    where = detect() if where is None else where
    return {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "packages": package_versions(),
        "lock": lock_state(root),
        "git": git_state(root),
        "hardware": hardware_summary(),
        "kaggle": on_kaggle(),
        "colab": on_colab(),
        "where": where.to_dict(),
    }


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (ru_maxrss: KiB on Linux, bytes on
    macOS); None-free: 0.0 where the resource module is missing (Windows)."""
    try:
        import resource
    except ImportError:
        return 0.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1e6 if sys.platform == "darwin" else 1024), 1)


def record_step_resources(env_file: Path, step: str) -> dict[str, Any]:
    """Add `resources.<step>` to env.json: peak RSS of the process and its cache hits/misses.

    A notebook is one process: its peak so far covers every step it ran, which is what limits
    a Kaggle session. Cache counts are this process's (CACHE_EVENTS: data and tokens).
    """
    import json

    from kit.core.atomic import write_json

    env = json.loads(env_file.read_text()) if env_file.is_file() else {}
    entry = {"peak_rss_mb": peak_rss_mb(), "cache": dict(CACHE_EVENTS)}
    env.setdefault("resources", {})[step] = entry
    write_json(env_file, env)
    return entry
