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
    invalid = invalid_sources(out)
    if invalid:
        return invalid
    if run.returncode != 0 or any(m in out for m in _SAID_FAILED):
        return f"The kaggle CLI failed during the {what} (exit {run.returncode}): {said}"
    return None


# What to do when `kaggle kernels push` says a source could not be attached, by kind.
SOURCE_FIX = {
    "dataset": ("Kaggle is still processing a new version of it, or it does not exist, or your "
                "token's account cannot see it. Fix: wait until `kaggle datasets status <ref>` "
                "says ready (`kit push` waits by itself), check the ref at "
                "https://www.kaggle.com/datasets/<ref>, then push again."),
    "competition": ("the slug is misspelled or the competition's rules are not accepted. Fix: "
                    "check competition.slug against the competition URL and accept the rules "
                    "at https://www.kaggle.com/competitions/<slug>/rules, then push again."),
    "kernel": ("the notebook has no finished version your account can see. Fix: check the "
               "ref at https://www.kaggle.com/code/<ref> and wait for its version to finish, "
               "then push again."),
    "model": ("a Kaggle Models handle must be owner/model/framework/variation/version of a "
              "model your account can see. Fix: copy it from the model's page "
              "(https://www.kaggle.com/models/<owner>/<model>) into kaggle.model_sources, then "
              "push again."),
}


def invalid_sources(output: str) -> str | None:
    """The kaggle CLI's answer that sources could not be attached (it still exits 0), for a
    person: which, why and the fix; None when every source was attached."""
    found = kaggle_cli.INVALID_SOURCES.findall(output)
    if not found:
        return None
    said = "; ".join(f"{kind} sources {refs.strip()}" for kind, refs in found)
    fixes = " ".join(f"For the {kind} sources: {SOURCE_FIX[kind]}" for kind in
                     dict.fromkeys(kind for kind, _ in found))
    return (f"Kaggle could not attach {said} to the notebook, so the version it made runs "
            f"without them (missing wheels, a model or data). {fixes}")


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
