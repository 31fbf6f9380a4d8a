"""Following a pushed Kaggle notebook: its version, its status until it ends, its output and log.

`kaggle kernels push` prints "Kernel version N successfully pushed"; `kaggle kernels status`
prints `has status "KernelWorkerStatus.RUNNING"` (kagglesdk's KernelWorkerStatus names);
`kaggle kernels output` downloads /kaggle/working and the log. Every pushed notebook (05_infer,
02_train, the image probe, the wheel builder) is followed through these.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from kit.errors import KitError
from kit.kaggle.commands import run_kaggle
from kit.kaggle.credentials import redact, require_credentials

log = logging.getLogger(__name__)

DONE, FAILED = "COMPLETE", ("ERROR", "CANCEL_ACKNOWLEDGED", "CANCEL_REQUESTED")
STATUS_LINE = re.compile(r'has status "(?:KernelWorkerStatus\.)?(\w+)"')
VERSION_LINE = re.compile(r"Kernel version (\d+) successfully pushed")


def follow(ref: str, page: str, env: Mapping[str, str] | None, poll_seconds: float,
           limit_seconds: float, sleep: Callable[[float], None] = time.sleep) -> str:
    """Poll `kaggle kernels status` until the kernel ends; its final status."""
    waited = 0.0
    while True:
        run = run_kaggle(["kernels", "status", ref], f"status check of {ref}", page, env=env)
        found = STATUS_LINE.search(run.output)
        status = found.group(1).upper() if found else "UNKNOWN"
        log.info("Kaggle notebook %s: %s (%.0f min)", ref, status, waited / 60)
        if status == DONE or status in FAILED:
            return status
        if waited >= limit_seconds:
            raise KitError(f"{ref} is still {status} after {waited / 3600:.1f} h. Fix: look at "
                           f"{page}; fetch the output later with `kaggle kernels output {ref}`.")
        sleep(poll_seconds)
        waited += poll_seconds


def fetch_output(ref: str, dest: Path | None, page: str,
                 env: Mapping[str, str] | None) -> list[str]:
    """`kaggle kernels output` into `dest`; the files there afterwards."""
    assert dest is not None
    dest.mkdir(parents=True, exist_ok=True)
    run_kaggle(["kernels", "output", ref, "-p", str(dest), "-o"], f"output download of {ref}",
               page, env=env)
    files = sorted(p for p in dest.rglob("*") if p.is_file())
    # A notebook that printed the token would bring it into the run folder: cut it out here.
    secrets = require_credentials(dict(os.environ if env is None else env)).secrets
    for path in files:
        if path.stat().st_size > 50_000_000:
            continue
        text = path.read_bytes().decode("utf-8", errors="surrogateescape")
        clean = redact(text, secrets, env)
        if clean != text:
            log.warning("%s held a Kaggle credential; it is replaced by %s.", path, "[hidden]")
            path.write_bytes(clean.encode("utf-8", errors="surrogateescape"))
    return [str(p.relative_to(dest)) for p in files]


def log_tail(folder: Path | None, ref: str, lines: int = 20) -> str:
    """The last lines of the kernel's log (Kaggle's JSON list of stream chunks, or plain text)."""
    path = (folder or Path(".")) / f"{ref.split('/')[1]}.log"
    if not path.is_file():
        return "(no log was downloaded)"
    text = path.read_text(errors="replace")
    with contextlib.suppress(json.JSONDecodeError, AttributeError, TypeError):
        text = "".join(chunk.get("data", "") for chunk in json.loads(text))
    return "\n".join(text.rstrip().splitlines()[-lines:])
