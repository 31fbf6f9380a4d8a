"""Talking to Kaggle through the real `kaggle` CLI: submit, download (credentials.py: who you are).

The CLI runs as a subprocess because `import kaggle` authenticates at import time and pops
`KAGGLE_API_TOKEN` from the environment (kaggle-api #882). Nothing here ever prints, logs or
raises with a token or key value in it: every CLI output passes through `redact` first.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kit.config.kaggle_names import check_slug, check_submission
from kit.core.platform import on_colab, on_kaggle
from kit.errors import KitError
from kit.kaggle.credentials import (
    TOKEN_PAGE,
    CredentialSource,
    find_credentials,
    redact,
    require_credentials,
)

__all__ = [
    "CredentialSource",
    "SubmitError",
    "SubmitResult",
    "download_competition",
    "find_credentials",
    "format_command",
    "on_colab",
    "on_kaggle",
    "redact",
    "require_credentials",
    "submit",
    "submit_command",
]

log = logging.getLogger(__name__)

COMPETITION_FILES = ("train.csv", "test.csv", "sample_submission.csv")


# ----------------------------------------------------------------------------- commands


def submit_command(
    slug: str, file: str | Path, message: str, kernel: str | None = None,
    version: int | str | None = None,
) -> list[str]:
    """The kaggle 2.x command line for a submission (competition slug positional).

    File competitions: `kaggle competitions submit <slug> -f <file> -m <msg>`. Code
    competitions: `kaggle competitions submit <slug> -k <owner/notebook> -v <N> -f <file> -m <msg>`
    where <file> is the name of the notebook's output file.
    """
    check_submission(slug, message, kernel, version)
    args = ["kaggle", "competitions", "submit", slug]
    if kernel is not None:
        args += ["-k", kernel, "-v", str(int(version))]
    args += ["-f", str(file)]
    # argparse reads a value starting with "-" as an option; the = form keeps it a value.
    args += [f"--message={message}"] if str(message).startswith("-") else ["-m", str(message)]
    return args


def format_command(
    slug: str, file: str | Path, message: str, kernel: str | None = None,
    version: int | str | None = None,
) -> str:
    """`submit_command` as one shell-quoted line, for printing a dry run."""
    return shlex.join(submit_command(slug, file, message, kernel, version))


_check_slug = check_slug  # the slug rule lives with the params (kit.config.kaggle_names)


def _kaggle_executable(env: Mapping[str, str]) -> list[str]:
    beside_python = Path(sys.executable).parent / "kaggle"
    if beside_python.is_file():
        return [str(beside_python)]
    if importlib.util.find_spec("kaggle") is not None:
        return [sys.executable, "-m", "kaggle"]
    on_path = shutil.which("kaggle", path=env.get("PATH"))
    if on_path:
        return [on_path]
    raise KitError(
        "The kaggle command is not installed in this environment. "
        f"Fix: `{sys.executable} -m pip install kaggle six` (kaggle 2.x needs six installed too)."
    )


def _cli_env(base: Mapping[str, str], source: CredentialSource) -> dict[str, str]:
    env = dict(base)
    env.update(source.env)
    # Verbose mode prints request headers, Authorization included.
    for name in ("VERBOSE", "VERBOSE_OUTPUT"):
        env.pop(name, None)
    env["PYTHONIOENCODING"] = "utf-8"
    return env


def _run_cli(args: list[str], env: dict[str, str], timeout: float,
             secrets: tuple[str, ...]) -> tuple[int | None, str]:
    """Run the kaggle CLI; (exit code or None on timeout, redacted stdout+stderr lines)."""
    cmd = _kaggle_executable(env) + args[1:]
    try:
        done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=timeout, check=False)
        code, raw = done.returncode, done.stdout or b""
    except subprocess.TimeoutExpired as exc:
        code, raw = None, exc.output or b""
    text = "\n".join(_lines(raw.decode("utf-8", errors="replace")))
    return code, redact(text, secrets, env)


def _lines(output: str) -> list[str]:
    """Output lines without tqdm progress bars (which redraw with \\r)."""
    parts = re.split(r"[\r\n]+", output)
    return [p.strip() for p in parts if p.strip() and "%|" not in p]


_CONNECTION = re.compile(
    r"ConnectionError|Connection aborted|RemoteDisconnected|Max retries exceeded|"
    r"Failed to establish a new connection|NameResolutionError|Failed to resolve|"
    r"Temporary failure in name resolution|Connection refused|Connection reset|"
    r"ConnectTimeout|ReadTimeout|ChunkedEncodingError",
)
_UNAUTHORIZED = re.compile(
    r"Authentication required to call the Kaggle API|401 Client Error|Unauthorized|"
    r"IntrospectToken|Invalid credentials",
)
# Kaggle's own words seen in issues: "You cannot submit until you accept the competition
# rules", "Permission 'competitions.participate' was denied" (also for a misspelled slug).
_FORBIDDEN = re.compile(
    r"403 Client Error|Forbidden|accept the competition rules|Permission '[\w.]+' was denied",
    re.IGNORECASE,
)
_SERVER = re.compile(r"\b(5\d\d) Server Error")
# `kaggle kernels push` prints these and still exits 0: the version is made without those
# sources (kaggle/api/kaggle_api_extended.py, `kernels_push_cli`, kaggle 2.2.4 and
# Kaggle/kaggle-api at 1744cda: invalidDatasetSources, invalidCompetitionSources,
# invalidKernelSources). kagglesdk's ApiSaveKernelResponse also has invalid_model_sources, which
# neither CLI version prints; "model" is matched in case a later one does.
INVALID_SOURCES = re.compile(
    r"The following are not valid (dataset|competition|kernel|model) sources and could "
    r"not be added to the kernel: (.*)")


def _failure(output: str, code: int | None, slug: str, action: str) -> str | None:
    """A message for a person when the CLI output says it failed, else None.

    The CLI can exit 0 while failing ("Could not submit to competition" after a failed
    upload, "Could not find competition" on 404), so the text decides, not only the exit code.
    """
    rules = f"https://www.kaggle.com/competitions/{slug}/rules"
    page = f"https://www.kaggle.com/competitions/{slug}"
    said = _lines(output)[-1] if _lines(output) else "(no output)"
    if code is None:
        return (f"Kaggle did not answer the {action} for {slug!r} in time. Fix: check your "
                f"connection and {page}/submissions (it may have gone through) before retrying.")
    if _CONNECTION.search(output):
        return (f"The connection to Kaggle failed or dropped during the {action} for {slug!r} "
                f"({said}). Fix: check this machine has internet (in a Kaggle notebook: "
                "Settings → Internet on; code competitions need it off, submit from the "
                f"competition page instead), then retry; look at {page}/submissions first in "
                "case it went through.")
    if _UNAUTHORIZED.search(output):
        return (f"Kaggle refused the {action} for {slug!r} (HTTP 401): a stale or revoked token, "
                f"or competition rules not accepted at {rules}. Fix: accept the rules there, "
                f"and if that does not help create a new token at {TOKEN_PAGE} and replace the "
                "old one (KAGGLE_API_TOKEN or ~/.kaggle/access_token).")
    if _FORBIDDEN.search(output):
        return (f"Kaggle refused the {action} for {slug!r} (HTTP 403: {said}): competition "
                f"rules not accepted at {rules}, or the slug is misspelled. Fix: check the slug "
                "against the competition URL and accept the rules there.")
    server = _SERVER.search(output)
    if server:
        return (f"Kaggle's server failed during the {action} for {slug!r} (HTTP "
                f"{server.group(1)}). Nothing is wrong on your side. Fix: wait a few minutes and "
                f"retry; check {page}/submissions first in case it went through.")
    if "Could not find competition" in output:
        return (f"Kaggle does not know competition {slug!r} or it no longer accepts "
                f"submissions. Fix: check the slug in {page} and that the deadline has not "
                "passed.")
    if "Could not submit to competition" in output:
        return (f"The upload of the submission file to Kaggle failed for {slug!r} "
                f"({said}). Fix: retry; if it keeps failing, check the file's size and format.")
    if code != 0:
        return f"The kaggle CLI failed during the {action} for {slug!r} (exit {code}): {said}"
    return None


# ----------------------------------------------------------------------------- submit


@dataclass(frozen=True)
class SubmitResult:
    """What happened to one submission (or what would happen, for a dry run)."""

    ok: bool
    dry_run: bool
    command: str  # shell-quoted, safe to print: no secrets are ever on the command line
    returncode: int | None  # None for a dry run or a timeout
    output: str  # the CLI's output, secrets redacted
    answer: str  # one line: what Kaggle said, or why it failed


class SubmitError(KitError):
    """A real submission that failed; `.result` holds the details for the submission log."""

    def __init__(self, message: str, result: SubmitResult) -> None:
        super().__init__(message)
        self.result = result


def _check_submission_file(file: Path) -> None:
    if not file.is_file():
        raise KitError(
            f"Submission file {file} does not exist. Fix: write it first with "
            "kit.submission.store.save_submission(df, run_dir) and pass the path it returns."
        )
    if file.stat().st_size == 0:
        raise KitError(
            f"Submission file {file} is empty (0 bytes). Fix: rewrite it from the predictions "
            "with kit.submission.store.save_submission(df, run_dir)."
        )


def submit(
    slug: str,
    file: str | Path,
    message: str,
    *,
    dry_run: bool = True,
    kernel: str | None = None,
    version: int | str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 600.0,
) -> SubmitResult:
    """Submit `file` to competition `slug` with the kaggle CLI; by default only a dry run.

    A dry run checks the command and the file and returns the command without running it.
    A real run also checks credentials, runs the CLI with `env` (default os.environ; Kaggle
    notebook secrets are added for the subprocess only) and reads what Kaggle answered. On
    any failure it raises `SubmitError` (a KitError) whose `.result` has ok=False, so a caller
    can still log the attempt. The file is only read, never changed.
    """
    args = submit_command(slug, file, message, kernel, version)
    command = shlex.join(args)
    file = Path(file)
    if kernel is None:  # a code competition submits the notebook's output, not a local file
        _check_submission_file(file)
    if dry_run:
        return SubmitResult(ok=True, dry_run=True, command=command, returncode=None, output="",
                            answer="dry run: not sent to Kaggle (pass dry_run=False to submit)")

    base = dict(os.environ if env is None else env)
    source = require_credentials(base)
    run_env = _cli_env(base, source)
    code, output = _run_cli(args, run_env, timeout, source.secrets)
    problem = _failure(output, code, slug, "submission")
    lines = _lines(output)
    if problem is None:
        last = lines[-1] if lines else ""
        said = next((ln for ln in lines if ln.startswith("Successfully")), last)
        if not said:
            problem = (f"The kaggle CLI said nothing about the submission to {slug!r}. Fix: check "
                       f"https://www.kaggle.com/competitions/{slug}/submissions before retrying.")
    if problem is not None:
        result = SubmitResult(ok=False, dry_run=False, command=command, returncode=code,
                              output=output, answer=problem.split(". Fix:")[0])
        raise SubmitError(problem, result)
    remaining = next((ln for ln in lines if "submissions remaining" in ln), "")
    answer = f"{said} ({remaining.rstrip('.')})" if remaining and remaining != said else said
    log.info("Kaggle answered: %s", answer)
    return SubmitResult(ok=True, dry_run=False, command=command, returncode=code, output=output,
                        answer=answer)


# ----------------------------------------------------------------------------- download


def download_competition(slug: str, dest: str | Path, *, env: Mapping[str, str] | None = None,
                         timeout: float = 1800.0) -> Path:
    """Download and unzip competition `slug` into `dest` with the kaggle CLI; return `dest`.

    The last step of data discovery. Without credentials or network it raises a KitError that
    says which files to put where by hand.
    """
    _check_slug(slug)
    dest = Path(dest)
    by_hand = (
        f"Or put the files there by hand: download them from "
        f"https://www.kaggle.com/competitions/{slug}/data and place "
        + ", ".join(str(dest / name) for name in COMPETITION_FILES)
        + " (the competition's own file names)."
    )
    base = dict(os.environ if env is None else env)
    try:
        source = require_credentials(base)
    except KitError as exc:
        raise KitError(f"Cannot download competition {slug!r}: {exc}\n{by_hand}") from None
    dest.mkdir(parents=True, exist_ok=True)
    args = ["kaggle", "competitions", "download", slug, "-p", str(dest)]
    code, output = _run_cli(args, _cli_env(base, source), timeout, source.secrets)
    problem = _failure(output, code, slug, "download")
    archive = dest / f"{slug}.zip"
    if problem is None and not archive.is_file():
        said = (_lines(output) or ["(no output)"])[-1]
        problem = f"The kaggle CLI did not produce {archive}: {said}"
    if problem is not None:
        raise KitError(f"{problem}\n{by_hand}")
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(dest)  # extractall drops absolute paths and ".." parts
    except zipfile.BadZipFile:
        raise KitError(f"{archive} is not a valid zip file (a broken download). Fix: delete it "
                       f"and call download_competition again.\n{by_hand}") from None
    archive.unlink()
    return dest
