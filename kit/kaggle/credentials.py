"""Kaggle credentials from every source (env, files, notebook secrets), and their redaction."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from kit.core.platform import on_colab, on_kaggle
from kit.errors import KitError

log = logging.getLogger(__name__)

TOKEN_PAGE = "https://www.kaggle.com/settings/api"
HIDDEN = "[hidden]"
# Kaggle API tokens look like KGAT_<hex>; redact them even when we did not load them ourselves.
_TOKEN_PATTERN = re.compile(r"KGAT_[A-Za-z0-9_-]+|(?<=Bearer )\S+")


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

    # Kaggle first: a Kaggle notebook also carries Colab's variables (its image is built on
    # Colab's, Kaggle/kagglehub PR #230), and there only the Kaggle secret exists.
    if not on_kaggle(env):
        if on_colab(env):
            return _colab_secrets(user, looked)
        looked.append("Kaggle notebook secrets: not in a Kaggle notebook "
                      "(KAGGLE_KERNEL_RUN_TYPE not set)")
        return None, looked
    try:
        from kaggle_secrets import UserSecretsClient  # only exists inside Kaggle notebooks
    except ImportError:
        looked.append("Kaggle notebook secrets: the kaggle_secrets module is not importable")
        return None, looked
    return _from_secrets(UserSecretsClient(), user, looked, "Kaggle notebook secret")


class _ColabSecrets:
    """Colab's `userdata` with the Kaggle client's `get_secret` name."""

    def __init__(self, userdata: object) -> None:
        self._userdata = userdata

    def get_secret(self, name: str) -> str:
        return self._userdata.get(name)  # raises SecretNotFoundError / NotebookAccessError


def _colab_secrets(user: str, looked: list[str]) -> tuple[CredentialSource | None, list[str]]:
    try:
        from google.colab import userdata  # only exists inside Colab
    except ImportError:
        looked.append("Colab secrets: google.colab.userdata is not importable")
        return None, looked
    return _from_secrets(_ColabSecrets(userdata), user, looked, "Colab secret")


def _from_secrets(client: object, user: str, looked: list[str],
                  kind: str) -> tuple[CredentialSource | None, list[str]]:
    """Credentials from a notebook's secrets (Kaggle's client or Colab's userdata)."""
    token = _notebook_secret(client, "KAGGLE_API_TOKEN")
    if token:
        return CredentialSource(kind, "secret KAGGLE_API_TOKEN",
                                env={"KAGGLE_API_TOKEN": token}, secrets=(token,)), looked
    key = _notebook_secret(client, "KAGGLE_KEY")
    user = user or _notebook_secret(client, "KAGGLE_USERNAME")
    if key and user:
        return CredentialSource(kind, "secrets KAGGLE_USERNAME + KAGGLE_KEY",
                                env={"KAGGLE_USERNAME": user, "KAGGLE_KEY": key},
                                secrets=(key,)), looked
    looked.append(f"{kind}s: no attached secret KAGGLE_API_TOKEN "
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
            "Add-ons → Secrets → add KAGGLE_API_TOKEN and tick it for this notebook; in Colab: "
            "the key icon → add KAGGLE_API_TOKEN with notebook access on."
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
