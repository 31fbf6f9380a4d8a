"""The environment variables of a real Kaggle notebook, a real Colab runtime and a plain machine.

Models of real things, each variable from a public source:

Kaggle (Kaggle/docker-python at 78aaa43f8cc8e6b01bbaa5a56c39b4a2f61a8277, 2026-08-12):
- `Dockerfile.tmpl` is `FROM us-docker.pkg.dev/colab-images/public/runtime:...`, so everything
  the Colab runtime image sets is inherited; kagglehub PR #230 (f81f26f, "Now that Kaggle uses
  the Colab as a base image, the `COLAB_RELEASE_TAG` environment variable is set in the Kaggle
  image") is the maintainers' word that COLAB_RELEASE_TAG is among them.
- Its `ENV` lines: TESSERACT_PATH, PYTHONPATH (facets), MKL_THREADING_LAYER, PYTHONUSERBASE,
  GIT_COMMIT, BUILD_DATE, and for the GPU image CUDA_HOME and LD_LIBRARY_PATH.
- Set by the runtime and read by the image's patches: KAGGLE_KERNEL_RUN_TYPE
  (`patches/kaggle_module_resolver.py`; kagglehub `src/kagglehub/env.py` decides "in a Kaggle
  notebook" by it), KAGGLE_USER_SECRETS_TOKEN and KAGGLE_URL_BASE (`patches/kaggle_web_client.py`,
  what `kaggle_secrets.UserSecretsClient` uses), KAGGLE_KERNEL_INTEGRATIONS, KAGGLE_DATA_PROXY_URL,
  KAGGLE_DATA_PROXY_TOKEN, KAGGLE_DATA_PROXY_PROJECT (`patches/sitecustomize.py`,
  `patches/kaggle_gcp.py`).

Colab: COLAB_RELEASE_TAG (value shape from kagglehub `tests/test_kaggle_api_client.py`:
"release-colab-20230531-060125-RC00"; Kaggle's FROM line names
`release-colab-external-images_20260514-060047_RC00`), TBE_RUNTIME_ADDR on a managed runtime
(kagglehub `src/kagglehub/clients.py`), COLAB_GPU on a GPU runtime, and `google.colab` importable
(Colab's pip freeze in googlecolab/backend-info lists `google-colab @ file:///colabtools/...`;
the Kaggle image inherits that package too).
"""

from __future__ import annotations

import importlib.machinery
import os
import sys
import types
from collections.abc import Mapping

COLAB_TAG = "release-colab-external-images_20260514-060047_RC00"

# What a Colab runtime sets (see the module docstring for each source).
COLAB: dict[str, str] = {
    "COLAB_RELEASE_TAG": COLAB_TAG,
    "TBE_RUNTIME_ADDR": "172.28.0.1:8011",
    "COLAB_GPU": "1",
    "HOME": "/root",
}

# A Kaggle notebook (GPU, batch): Colab's variables, the image's ENV lines, the runtime's own.
KAGGLE: dict[str, str] = {
    **{k: v for k, v in COLAB.items() if k != "TBE_RUNTIME_ADDR"},
    "TESSERACT_PATH": "/usr/bin/tesseract",
    "PYTHONPATH": ":/opt/facets/facets_overview/python/",
    "MKL_THREADING_LAYER": "GNU",
    "PYTHONUSERBASE": "/root/.local",
    "GIT_COMMIT": "78aaa43f8cc8e6b01bbaa5a56c39b4a2f61a8277",
    "BUILD_DATE": "20260813-000000",
    "CUDA_HOME": "/usr/local/cuda",
    "LD_LIBRARY_PATH": "/usr/local/nvidia/lib64:/usr/local/cuda/lib64",
    "KAGGLE_KERNEL_RUN_TYPE": "Batch",
    "KAGGLE_URL_BASE": "https://www.kaggle.com",
    "KAGGLE_USER_SECRETS_TOKEN": "eyJhbGciOiJkaXIi.stand-in-jwt",
    "KAGGLE_KERNEL_INTEGRATIONS": "",
    "KAGGLE_DATA_PROXY_URL": "https://dp.kaggle.net",
    "KAGGLE_DATA_PROXY_TOKEN": "stand-in-proxy-token",
    "KAGGLE_DATA_PROXY_PROJECT": "kaggle-161607",
}

# A plain Linux machine: none of the above.
PLAIN: dict[str, str] = {"HOME": "/home/user"}

ENVIRONMENTS: dict[str, dict[str, str]] = {"kaggle": KAGGLE, "colab": COLAB, "plain": PLAIN}
# Every variable any of them sets: cleared before one of them is applied.
_ALL = sorted({k for env in ENVIRONMENTS.values() for k in env} - {"HOME", "PYTHONPATH"})


def environment(name: str, **extra: str) -> dict[str, str]:
    """A copy of one platform's variables (`kaggle`, `colab` or `plain`) with `extra` added."""
    return {**ENVIRONMENTS[name], **extra}


def apply(monkeypatch, env: Mapping[str, str]) -> None:
    """Make os.environ look like `env` for one test (the platforms' variables only; PATH,
    HOME and PYTHONPATH of this machine stay, so subprocesses still work)."""
    for key in _ALL:
        monkeypatch.delenv(key, raising=False)
    for key in [k for k in os.environ if k.startswith(("KAGGLE_", "COLAB_"))]:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        if key not in ("HOME", "PYTHONPATH"):
            monkeypatch.setenv(key, value)


class SecretNotFoundError(Exception):
    """google.colab.userdata's error for a secret that does not exist."""


class NotebookAccessError(Exception):
    """google.colab.userdata's error outside a Colab kernel (e.g. the copy inside Kaggle)."""


def fake_modules(monkeypatch, name: str, secrets: Mapping[str, str] | None = None) -> None:
    """The platform's secret modules: `kaggle_secrets` on Kaggle (the image's
    patches/kaggle_secrets.py, whose `get_secret` raises BackendError for a missing label),
    `google.colab` on Colab and, inherited but unusable (userdata raises), on Kaggle; neither on
    a plain machine."""
    secrets = dict(secrets or {})
    for module in ("google", "google.colab", "google.colab.userdata", "kaggle_secrets"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    if name == "plain":
        return

    def get(label: str) -> str:
        if name != "colab":
            raise NotebookAccessError("userdata is only available in a Colab notebook")
        if label not in secrets:
            raise SecretNotFoundError(label)
        return secrets[label]

    google, colab, userdata = (_module(n) for n in ("google", "google.colab",
                                                     "google.colab.userdata"))
    userdata.get = get
    colab.userdata, google.colab = userdata, colab
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.setitem(sys.modules, "google.colab.userdata", userdata)
    if name != "kaggle":
        return

    class BackendError(Exception):
        """patches/kaggle_secrets.py: what the secrets backend's refusal becomes."""

    class UserSecretsClient:
        def get_secret(self, label: str) -> str:
            if label not in secrets:
                raise BackendError(f"Unexpected response from the service. Response: "
                                   f"No user secrets exist for label {label}")
            return secrets[label]

    module = _module("kaggle_secrets")
    module.UserSecretsClient = UserSecretsClient
    monkeypatch.setitem(sys.modules, "kaggle_secrets", module)


def _module(name: str) -> types.ModuleType:
    """A module find_spec accepts (it needs a __spec__; accelerate asks for google.colab)."""
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    return module
