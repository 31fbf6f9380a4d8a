"""On Kaggle, a continued training session starts its run folder as the previous session's output.

`kit push RUN --notebook 02_train --continue` attaches the previous version's output as a
kernel source (kit.kaggle.remote_train); `start` calls `carry_over_session` before it opens the
run, so training resumes from that output's latest complete checkpoint.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from kit.core import platform

log = logging.getLogger(__name__)


def carry_over_session(run_path: Path, run_name: str,
                       env: Mapping[str, str] | None = None) -> Path | None:
    """On Kaggle, a new run folder starts as the previous session's (an attached notebook output).

    Looks for `<input>/<kernel-slug>/outputs/<run_name>/params.yaml` (and one mount level deeper,
    `<input>/notebooks/<owner>/<slug>/...`); copies that folder to `run_path` when `run_path`
    does not exist yet. Returns the folder copied from, or None.
    """
    env = os.environ if env is None else env
    if not platform.on_kaggle(env) or run_path.exists():
        return None
    root = platform.kaggle_input(env)
    if not root.is_dir():
        return None
    found = sorted(root.glob(f"*/outputs/{run_name}/params.yaml")) + sorted(
        root.glob(f"*/*/*/outputs/{run_name}/params.yaml"))
    if not found:
        return None
    source = found[0].parent
    if len(found) > 1:
        log.warning("Several attached outputs hold run %r: %s; continuing from the first.",
                    run_name, ", ".join(str(p.parent) for p in found))
    shutil.copytree(source, run_path)
    log.info("Continuing run %r from the previous session's output %s.", run_name, source)
    return source

