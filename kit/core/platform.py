"""Where the kit runs (Kaggle, Colab or a plain machine) and the input folder that follows."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

# Kaggle mounts attached competitions, datasets and models here; tests point it elsewhere.
KAGGLE_INPUT_ENV = "KIT_KAGGLE_INPUT"


def kaggle_input(env: Mapping[str, str] | None = None) -> Path:
    """Kaggle's read-only input folder (`/kaggle/input`, or `$KIT_KAGGLE_INPUT`)."""
    return Path((os.environ if env is None else env).get(KAGGLE_INPUT_ENV, "/kaggle/input"))


def on_kaggle(env: Mapping[str, str] | None = None) -> bool:
    """True inside a Kaggle notebook (Kaggle sets KAGGLE_KERNEL_RUN_TYPE)."""
    return bool((os.environ if env is None else env).get("KAGGLE_KERNEL_RUN_TYPE"))


def on_colab(env: Mapping[str, str] | None = None) -> bool:
    """True inside Google Colab (Colab sets COLAB_RELEASE_TAG and ships google.colab)."""
    env = os.environ if env is None else env
    in_colab = bool(env.get("COLAB_RELEASE_TAG") or env.get("COLAB_GPU"))
    return in_colab or "google.colab" in sys.modules
