"""Waiting for Kaggle to finish processing a dataset version before a notebook attaches it.

After `kaggle datasets create/version` Kaggle processes the upload for a while; a notebook pushed
meanwhile gets the dataset refused ("not valid dataset sources", exit 0) and runs without it.
`kaggle datasets status <ref> --format json` (kaggle 2.2.4, `dataset_status` in
kaggle/api/kaggle_api_extended.py) prints {"status": ..., "current_version_number": N}; the
status is a lower-case `DatabundleVersionStatus` name (kagglesdk/datasets/types/
dataset_enums.py): not_yet_persisted, blobs_received, blobs_decompressed, blobs_copied_to_sds,
individual_blobs_compressed, ready, failed, deleted, reprocessing. Only "ready" can be attached.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping

from kit.errors import KitError
from kit.kaggle.commands import failure, run_kaggle

log = logging.getLogger(__name__)

READY = "ready"
BROKEN = ("failed", "deleted")


def status_command(ref: str) -> list[str]:
    """`datasets status <ref> --format json`: the status and the current version in one call."""
    return ["datasets", "status", ref, "--format", "json"]


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def dataset_status(ref: str, env: Mapping[str, str] | None) -> tuple[str, int | None]:
    """(status, current version number) of dataset `ref`, as the kaggle CLI reports them."""
    page = f"https://www.kaggle.com/datasets/{ref}"
    run = run_kaggle(status_command(ref), f"status check of dataset {ref}", page, env=env,
                     check=False)
    # kagglesdk raises the server's JSON message as an HTTPError (kaggle_http_client.py,
    # `_prepare_response`) and the CLI prints it and exits 1: "NotFound" (kaggle-cli #530),
    # or "404 Client Error: Not Found" from requests when the body is not JSON.
    if run.returncode and re.search(r"not ?found|\b404\b", run.output, re.IGNORECASE):
        raise KitError(
            f"Kaggle has no dataset {ref} (the notebook attaches it). Fix: send it first: "
            "`python -m kit package RUN --out DIR` (or `python -m kit push RUN --out NB "
            "--dataset DIR`, which packages and pushes in one command); check kaggle.owner and "
            "kaggle.dataset if it exists under another name.")
    if run.returncode == 2 and "unrecognized arguments: --format" in run.output:
        # A CLI older than --format (kaggle-api at 1744cda: `dataset_status_cli(dataset,
        # dataset_opt)`) prints the bare status; the version number is then unknown.
        plain = run_kaggle(["datasets", "status", ref], f"status check of dataset {ref}", page,
                           env=env)
        return (plain.lines or ["(no answer)"])[-1].strip().lower(), None
    problem = failure(run, f"status check of dataset {ref}", page)
    if problem:
        raise KitError(problem)
    answer = next((ln for ln in reversed(run.lines) if ln.startswith("{")), "")
    try:
        data = json.loads(answer)
        return str(data["status"]).lower(), data.get("current_version_number")
    except (json.JSONDecodeError, KeyError, TypeError):
        raise KitError(f"`kaggle {' '.join(status_command(ref))}` answered {run.output[-300:]!r}, "
                       "not the JSON status this kit reads (kaggle 2.2.x). Fix: `pip install "
                       "'kaggle>=2.2.4'`, or check the dataset at " + page) from None


def wait_for_dataset(ref: str, env: Mapping[str, str] | None, poll_seconds: float,
                     limit_seconds: float,
                     sleep: Callable[[float], None] = time.sleep) -> int | None:
    """Poll until dataset `ref` is ready; its current version number. KitError (with the fix)
    when Kaggle failed to process it or it is not ready within `limit_seconds`."""
    page = f"https://www.kaggle.com/datasets/{ref}"
    waited = 0.0
    while True:
        status, version = dataset_status(ref, env)
        log.info("Kaggle dataset %s version %s: %s | %s elapsed | limit %s", ref, version, status,
                 _clock(waited), _clock(limit_seconds))
        if status == READY:
            return version
        if status in BROKEN:
            raise KitError(
                f"Kaggle could not process dataset {ref} version {version} (status {status}). "
                f"Fix: read what Kaggle says at {page}, then send a new version with `python -m "
                "kit package RUN --out DIR` and push again.")
        if waited >= limit_seconds:
            raise KitError(
                f"Dataset {ref} version {version} is still {status} after {_clock(waited)}, so "
                f"the notebook was not pushed (it would run without it). Fix: check {page}; "
                f"push again when `kaggle {' '.join(status_command(ref))}` says ready, or wait "
                "longer with --dataset-wait-minutes.")
        sleep(poll_seconds)
        waited += poll_seconds
