"""Talking to Kaggle through the real `kaggle` CLI: credentials, submit, download, where we run.

The CLI runs as a subprocess because `import kaggle` authenticates at import time and pops
`KAGGLE_API_TOKEN` from the environment (kaggle-api #882). Nothing here ever prints, logs or
raises with a token or key value in it: every CLI output passes through `redact` first.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kit.core.platform import on_colab, on_kaggle
from kit.errors import KitError

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

TOKEN_PAGE = "https://www.kaggle.com/settings/api"
HIDDEN = "[hidden]"
COMPETITION_FILES = ("train.csv", "test.csv", "sample_submission.csv")
_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# Kaggle API tokens look like KGAT_<hex>; redact them even when we did not load them ourselves.
_TOKEN_PATTERN = re.compile(r"KGAT_[A-Za-z0-9_-]+|(?<=Bearer )\S+")


# ----------------------------------------------------------------------------- where we run


# ----------------------------------------------------------------------------- credentials


@dataclass(frozen=True)
class CredentialSource:
    """Where the kaggle CLI will find credentials. Holds no secret in its repr or str."""

    kind: str  # e.g. "KAGGLE_API_TOKEN environment variable"
    location: str  # a path or variable names, never a value
    warning: str = ""  # e.g. kaggle.json readable by other users, with the chmod fix
    # Variables to add to the CLI's environment only (secrets read from a Kaggle notebook).
    env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    # Values to cut out of any output.
    secrets: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def __str__(self) -> str:
        return f"{self.kind} ({self.location})"


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError, ValueError):
        return ""


def _permission_warning(path: Path) -> str:
    try:
        mode = path.stat().st_mode
    except OSError:
        return ""
    if os.name != "nt" and mode & 0o077:
        return (
            f"{path} is readable by other users of this machine (mode {mode & 0o777:o}). "
            f"Fix: run `chmod 600 {path}`."
        )
    return ""


def _config_dir(env: Mapping[str, str], home: Path) -> Path:
    """The folder the kaggle CLI reads kaggle.json from (same rules as kaggle 2.x)."""
    if env.get("KAGGLE_CONFIG_DIR"):
        return Path(env["KAGGLE_CONFIG_DIR"])
    legacy = home / ".kaggle"
    if sys.platform.startswith("linux") and not legacy.exists():
        return Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "kaggle"
    return legacy


def _home(env: Mapping[str, str]) -> Path:
    return Path(env["HOME"]) if env.get("HOME") else Path.home()


def _notebook_secret(client: object, name: str) -> str:
    """One Kaggle notebook secret, or "" when absent or not attached to this notebook."""
    try:
        return (client.get_secret(name) or "").strip()
    except Exception:  # the client raises a bare error for a missing or unattached secret
        return ""


def _search(env: Mapping[str, str], home: Path) -> tuple[CredentialSource | None, list[str]]:
    """The first credential source in the kaggle CLI's order, and what was looked at."""
    looked: list[str] = []

    token = env.get("KAGGLE_API_TOKEN", "").strip()
    if token:
        # The CLI also accepts a path to a token file in this variable.
        from_file = _read_text(Path(token)) if len(token) < 4096 else ""
        secrets = tuple(s for s in (token, from_file) if s)
        return CredentialSource("KAGGLE_API_TOKEN environment variable", "KAGGLE_API_TOKEN",
                                secrets=secrets), looked
    looked.append("environment variable KAGGLE_API_TOKEN: not set")

    token_file = home / ".kaggle" / "access_token"
    for path in (token_file, token_file.with_suffix(".txt")):
        value = _read_text(path)
        if value:
            return CredentialSource("access token file", str(path), _permission_warning(path),
                                    secrets=(value,)), looked
    state = "empty" if token_file.exists() else "missing"
    looked.append(f"token file {token_file}: {state}")

    user, key = env.get("KAGGLE_USERNAME", "").strip(), env.get("KAGGLE_KEY", "").strip()
    config = _config_dir(env, home) / "kaggle.json"
    config_dir = env.get("KAGGLE_CONFIG_DIR")
    where = f" (KAGGLE_CONFIG_DIR={config_dir})" if config_dir else ""
    data: object = {}
    if config.exists():
        try:
            data = json.loads(config.read_text(encoding="utf-8") or "{}")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            data = None
        if not isinstance(data, dict):
            looked.append(f"legacy key file {config}{where}: not valid JSON")
        elif data.get("username") and data.get("key"):
            secrets = tuple(s for s in (str(data["key"]), key) if s)
            return CredentialSource("legacy kaggle.json", str(config), _permission_warning(config),
                                    secrets=secrets), looked
        else:
            absent = [k for k in ("username", "key") if not data.get(k)]
            looked.append(f"legacy key file {config}{where}: has no {' or '.join(absent)}")
    else:
        looked.append(f"legacy key file {config}{where}: missing")

    if user and key:
        return CredentialSource("KAGGLE_USERNAME + KAGGLE_KEY environment variables",
                                "KAGGLE_USERNAME, KAGGLE_KEY", secrets=(key,)), looked
    # The CLI merges kaggle.json with the variables (which win), so half of each also works.
    half = data if isinstance(data, dict) else {}
    if (user or half.get("username")) and (key or half.get("key")):
        secrets = tuple(str(s) for s in (key, half.get("key")) if s)
        return CredentialSource("kaggle.json + KAGGLE_USERNAME/KAGGLE_KEY", str(config),
                                _permission_warning(config), secrets=secrets), looked
    if user or key:
        have, lack = ("KAGGLE_USERNAME", "KAGGLE_KEY")
        if key:
            have, lack = lack, have
        looked.append(f"environment variables KAGGLE_USERNAME + KAGGLE_KEY: {have} is set "
                      f"but {lack} is not")
    else:
        looked.append("environment variables KAGGLE_USERNAME + KAGGLE_KEY: not set")

    oauth = home / ".kaggle" / "credentials.json"
    if _read_text(oauth):
        try:
            stored = json.loads(oauth.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            stored = {}
        secrets = tuple(str(v) for k, v in dict(stored).items() if "token" in k.lower() and v)
        return CredentialSource("`kaggle auth login` credentials", str(oauth),
                                secrets=secrets), looked
    looked.append(f"`kaggle auth login` credentials {oauth}: missing")

    if not on_kaggle(env):
        looked.append("Kaggle notebook secrets: not in a Kaggle notebook "
                      "(KAGGLE_KERNEL_RUN_TYPE not set)")
        return None, looked
    try:
        from kaggle_secrets import UserSecretsClient  # only exists inside Kaggle notebooks
    except ImportError:
        looked.append("Kaggle notebook secrets: the kaggle_secrets module is not importable")
        return None, looked
    client = UserSecretsClient()
    token = _notebook_secret(client, "KAGGLE_API_TOKEN")
    if token:
        return CredentialSource("Kaggle notebook secret", "secret KAGGLE_API_TOKEN",
                                env={"KAGGLE_API_TOKEN": token}, secrets=(token,)), looked
    key = _notebook_secret(client, "KAGGLE_KEY")
    user = user or _notebook_secret(client, "KAGGLE_USERNAME")
    if key and user:
        return CredentialSource("Kaggle notebook secret", "secrets KAGGLE_USERNAME + KAGGLE_KEY",
                                env={"KAGGLE_USERNAME": user, "KAGGLE_KEY": key},
                                secrets=(key,)), looked
    looked.append("Kaggle notebook secrets: no attached secret KAGGLE_API_TOKEN "
                  "(nor KAGGLE_USERNAME + KAGGLE_KEY)"
                  + (" — KAGGLE_KEY found but no KAGGLE_USERNAME" if key else ""))
    return None, looked


def find_credentials(
    env: Mapping[str, str] | None = None, home: Path | None = None
) -> CredentialSource | None:
    """The credentials the kaggle CLI would use, in its order, or None.

    Order: KAGGLE_API_TOKEN, ~/.kaggle/access_token, kaggle.json (in KAGGLE_CONFIG_DIR if set),
    KAGGLE_USERNAME + KAGGLE_KEY, `kaggle auth login` credentials, and inside a Kaggle notebook
    the secrets KAGGLE_API_TOKEN or KAGGLE_USERNAME + KAGGLE_KEY (loaded into the CLI's
    environment only, never into os.environ). `home` defaults to env's HOME.
    """
    env = os.environ if env is None else env
    source, _ = _search(env, _home(env) if home is None else home)
    return source


def require_credentials(
    env: Mapping[str, str] | None = None, home: Path | None = None
) -> CredentialSource:
    """Like `find_credentials`, but a KitError listing what was looked for when none exist."""
    env = os.environ if env is None else env
    home = _home(env) if home is None else home
    source, looked = _search(env, home)
    if source is None:
        lines = "\n".join(f"  - {item}" for item in looked)
        raise KitError(
            "No Kaggle credentials found. Looked for, in the order the kaggle CLI uses:\n"
            f"{lines}\n"
            f"Fix: create an API token at {TOKEN_PAGE} (\"Generate New Token\"), then either "
            f"set it as the environment variable KAGGLE_API_TOKEN or save it alone in "
            f"{home / '.kaggle' / 'access_token'} (chmod 600). In a Kaggle notebook: "
            "Add-ons → Secrets → add KAGGLE_API_TOKEN and tick it for this notebook."
        )
    if source.warning:
        log.warning(source.warning)
    return source


def _known_secrets(env: Mapping[str, str]) -> set[str]:
    """Credential values visible from `env` and its HOME's files (never notebook secrets)."""
    values = {env.get(name, "").strip() for name in ("KAGGLE_API_TOKEN", "KAGGLE_KEY")}
    home = _home(env)
    for path in (home / ".kaggle" / "access_token", home / ".kaggle" / "access_token.txt"):
        values.add(_read_text(path))
    try:
        data = json.loads(_read_text(_config_dir(env, home) / "kaggle.json") or "{}")
        values.add(str(data.get("key", "")) if isinstance(data, dict) else "")
    except json.JSONDecodeError:
        pass
    return {v for v in values if v}


def redact(text: str, secrets: tuple[str, ...] | list[str] = (),
           env: Mapping[str, str] | None = None) -> str:
    """`text` with every known secret replaced by [hidden].

    Known secrets: the given values, the credential values visible from `env` (default
    os.environ: KAGGLE_API_TOKEN, KAGGLE_KEY, the token file, kaggle.json's key), and anything
    shaped like a Kaggle token (KGAT_…) or a Bearer credential.
    """
    values = set(secrets) | _known_secrets(os.environ if env is None else env)
    # Longest first, so a secret that contains another is cut whole; skip trivially short ones.
    for value in sorted((v for v in values if len(v) >= 4), key=len, reverse=True):
        text = text.replace(value, HIDDEN)
    return _TOKEN_PATTERN.sub(HIDDEN, text)


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
    _check_slug(slug)
    if not str(message).strip():
        raise KitError(
            f"Empty submission message for competition {slug!r}. Kaggle requires one (-m). "
            "Fix: pass a message that says which run and model this is, e.g. 'run-3 deberta fold0'."
        )
    if (kernel is None) != (version is None):
        raise KitError(
            f"Code-competition submission to {slug!r} needs both kernel and version "
            f"(got kernel={kernel!r}, version={version!r}). Fix: pass kernel='<owner>/<notebook>' "
            "and version=<N>, the version number `kaggle kernels push` printed."
        )
    args = ["kaggle", "competitions", "submit", slug]
    if kernel is not None:
        if not re.fullmatch(r"[^/\s]+/[^/\s]+", kernel):
            raise KitError(
                f"Kernel {kernel!r} is not of the form <owner>/<notebook>. "
                "Fix: use the last two parts of the notebook URL, e.g. 'alice/my-deberta-run'."
            )
        if not str(version).isdigit() or int(version) < 1:
            raise KitError(
                f"Kernel version {version!r} is not a positive whole number. "
                "Fix: pass the version number `kaggle kernels push` printed, e.g. version=3."
            )
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


def _check_slug(slug: str) -> None:
    if not isinstance(slug, str) or not _SLUG.match(slug):
        raise KitError(
            f"Competition slug {slug!r} is not valid. Fix: use the part of the competition URL "
            "after /competitions/, e.g. 'titanic' for https://www.kaggle.com/competitions/titanic."
        )


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
