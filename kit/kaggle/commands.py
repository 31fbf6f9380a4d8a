"""Running `kaggle datasets …` and `kaggle kernels …` through the real CLI, with errors for people.

Shares the submit path's runner (kit.kaggle.cli: credentials into the subprocess only, every
output redacted) and its reading of failures: a stale token (401), a server failure (5xx), a
dropped connection, a timeout; the CLI often exits 0 after printing a failure, so the text decides.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from kit.errors import KitError
from kit.kaggle import cli as kaggle_cli
from kit.kaggle.credentials import TOKEN_PAGE, require_credentials


@dataclass(frozen=True)
class CliRun:
    """One kaggle CLI call: its command line (no secrets on it) and redacted output."""

    command: str
    returncode: int | None
    output: str

    @property
    def lines(self) -> list[str]:
        return kaggle_cli._lines(self.output)


# The CLI prints these and still exits 0.
_SAID_FAILED = ("Kernel push error", "Dataset creation error", "Dataset version creation error",
                "error:", "Error:", "is already in use")


def failure(run: CliRun, what: str, page: str) -> str | None:
    """Why `run` failed, for a person (with the fix), or None when it did not."""
    out, said = run.output, (run.lines or ["(no output)"])[-1]
    if run.returncode is None:
        return f"Kaggle did not answer the {what} in time. Fix: check {page} before retrying."
    if kaggle_cli._CONNECTION.search(out):
        return (f"The connection to Kaggle failed or dropped during the {what} ({said}). Fix: "
                f"check this machine has internet, then retry; look at {page} first in case it "
                "went through.")
    if kaggle_cli._UNAUTHORIZED.search(out):
        return (f"Kaggle refused the {what} (HTTP 401): a stale or revoked token. Fix: create a "
                f"new token at {TOKEN_PAGE} and replace the old one (KAGGLE_API_TOKEN or "
                "~/.kaggle/access_token).")
    server = kaggle_cli._SERVER.search(out)
    if server:
        return (f"Kaggle's server failed during the {what} (HTTP {server.group(1)}). Nothing is "
                f"wrong on your side. Fix: wait a few minutes and retry; check {page} first.")
    if kaggle_cli._FORBIDDEN.search(out) or "404 Client Error" in out:
        return (f"Kaggle refused the {what} ({said}). Fix: check the owner and slug in "
                f"{page} and that your token belongs to that owner.")
    if run.returncode != 0 or any(m in out for m in _SAID_FAILED):
        return f"The kaggle CLI failed during the {what} (exit {run.returncode}): {said}"
    return None


def run_kaggle(args: list[str], what: str, page: str, *, env: Mapping[str, str] | None = None,
               timeout: float = 1800.0, check: bool = True) -> CliRun:
    """Run `kaggle <args…>` with the credentials found; KitError (with the fix) on failure."""
    base = dict(os.environ if env is None else env)
    source = require_credentials(base)
    argv = ["kaggle", *args]
    code, output = kaggle_cli._run_cli(argv, kaggle_cli._cli_env(base, source), timeout,
                                       source.secrets)
    run = CliRun(shlex.join(argv), code, output)
    problem = failure(run, what, page) if check else None
    if problem:
        raise KitError(problem)
    return run
