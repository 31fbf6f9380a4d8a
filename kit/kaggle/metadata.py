"""`dataset-metadata.json` and `kernel-metadata.json`: written here, checked by the kaggle CLI.

Validation calls the installed kaggle package's own `dataset_create_new`, `dataset_create_version`
and `kernels_push` with the network cut out at the point where they would start sending (the
client builder and the file upload raise a private "checked" marker), so every rule the CLI
applies before sending (slug and title lengths, licenses, id forms, language, kernel type,
source strings, the code file) is the CLI's, not a copy. It runs in a subprocess with no
credentials, because importing `kaggle` authenticates and edits the environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from kit.errors import KitError

DATASET_FILE = "dataset-metadata.json"
KERNEL_FILE = "kernel-metadata.json"
# `kaggle kernels push --accelerator` / `machine_shape` names; NvidiaTeslaT4 is T4 x2 on Kaggle.
ACCELERATORS = {"t4x2": "NvidiaTeslaT4", "p100": "NvidiaTeslaP100", "none": None}


PLACEHOLDER_OWNER = "your-kaggle-username"  # dry runs without a Kaggle username

def slugify(text: str) -> str:
    """A Kaggle-style slug: lower case, dashes between words."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _title(slug: str) -> str:
    """A title Kaggle accepts (6 to 50 characters) that slugifies back to `slug`."""
    title = slug.replace("-", " ")
    return (title + " " * 6)[: max(6, min(50, len(title)))].strip().ljust(6, "x")


def dataset_metadata(owner: str, slug: str, *, title: str | None = None,
                     description: str = "", license_name: str = "CC0-1.0") -> dict[str, Any]:
    """The content of dataset-metadata.json for `owner/slug`."""
    return {"title": title or _title(slug), "id": f"{owner}/{slug}",
            "licenses": [{"name": license_name}], "description": description}


def kernel_metadata(
    owner: str, slug: str, code_file: str, *, title: str | None = None, private: bool = True,
    accelerator: str = "t4x2", internet: bool = False, code_competition: bool = False,
    dataset_sources: list[str] | None = None, competition_sources: list[str] | None = None,
    model_sources: list[str] | None = None, kernel_sources: list[str] | None = None,
    scoring: bool = True,
) -> dict[str, Any]:
    """The content of kernel-metadata.json; refuses internet on for a code competition's scoring
    notebook (`scoring`; a training notebook may use the internet).

    `kernel_sources` ("owner/slug") attach other notebooks' output (latest version) under
    /kaggle/input/<slug>/, as a continued training session reads the previous one's.
    """
    if code_competition and internet and scoring:
        raise KitError(
            f"Notebook {owner}/{slug} would run with the internet on for a code competition, "
            "which Kaggle refuses to score. Fix: set kaggle.internet: false and attach the "
            "offline dataset (`python -m kit package`).")
    if accelerator not in ACCELERATORS:
        raise KitError(f"Accelerator {accelerator!r} is not one of {', '.join(ACCELERATORS)}.")
    meta: dict[str, Any] = {
        "id": f"{owner}/{slug}", "title": title or _title(slug), "code_file": code_file,
        "language": "python", "kernel_type": "notebook", "is_private": private,
        "enable_gpu": accelerator != "none", "enable_tpu": False, "enable_internet": internet,
        "dataset_sources": list(dataset_sources or []),
        "competition_sources": list(competition_sources or []),
        "kernel_sources": list(kernel_sources or []),
        "model_sources": list(model_sources or []),
    }
    if ACCELERATORS[accelerator]:
        meta["machine_shape"] = ACCELERATORS[accelerator]
    return meta


def write_metadata(folder: Path, name: str, meta: dict[str, Any]) -> Path:
    """Write `meta` as `folder/name` (pretty JSON); the path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return path


def validate(folder: Path, kind: str) -> None:
    """Check `folder`'s metadata with the kaggle CLI's code; KitError with its words if refused.

    kind: "dataset" (create and version rules) or "kernel" (push rules).
    """
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("KAGGLE_") and k not in ("VERBOSE", "VERBOSE_OUTPUT")}
    with tempfile.TemporaryDirectory() as home:
        env["HOME"] = home  # an empty home: no kaggle.json or token file is read
        done = subprocess.run([sys.executable, "-m", "kit.kaggle.metadata", kind, str(folder)],
                              capture_output=True, text=True, env=env, check=False, timeout=120)
    verdict = [ln for ln in done.stdout.splitlines() if ln.startswith(("OK ", "INVALID "))]
    if done.returncode == 0 and verdict and verdict[-1].startswith("OK "):
        return
    said = verdict[-1].removeprefix("INVALID ") if verdict else done.stderr.strip()[-500:]
    file = KERNEL_FILE if kind == "kernel" else DATASET_FILE
    raise KitError(f"The kaggle CLI refuses {folder / file}: {said}")


class _CheckedError(Exception):
    """Raised where the kaggle CLI would start sending: everything before it passed."""


def _check_with_kaggle(kind: str, folder: str) -> str:
    """Run the CLI's own checks on `folder` without sending; "" when it passes, else why."""
    from unittest import mock

    from kaggle.api.kaggle_api_extended import KaggleApi
    from requests import HTTPError

    def stop(*args: object, **kwargs: object) -> None:
        raise _CheckedError

    api = KaggleApi()
    meta_name = KERNEL_FILE if kind == "kernel" else DATASET_FILE
    meta = json.loads((Path(folder) / meta_name).read_text(encoding="utf-8"))
    owner = str(meta.get("id", "/")).split("/")[0]
    api.config_values = {api.CONFIG_NAME_USER: owner}
    try:
        if kind == "kernel":
            api.build_kaggle_client = stop
            api.kernels_push(folder)
        else:
            def not_found(ref: str) -> None:
                raise HTTPError("stand-in: not found")

            api.dataset_status = not_found
            api.upload_files = stop
            with contextlib.suppress(_CheckedError):
                api.dataset_create_new(folder)
            api.build_kaggle_client = mock.MagicMock()
            api.dataset_create_version(folder, "kit package")
    except _CheckedError:
        return ""
    except (ValueError, KeyError, TypeError) as err:
        return str(err) or type(err).__name__
    return "the CLI did not reach its send step (it may have changed: check kit.kaggle.metadata)"


if __name__ == "__main__":
    problem = _check_with_kaggle(sys.argv[1], sys.argv[2])
    sys.stdout.write(("INVALID " + problem if problem else "OK " + sys.argv[1]) + "\n")
    sys.exit(1 if problem else 0)
