"""Where the project is: the folder holding `params/`, which run folders and data hang below."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["find_project_root"]


def find_project_root(start: Path | None = None) -> Path:
    """The folder holding `params/` (the repo root), walking up from `start` (default: cwd).

    `COMPKIT_ROOT` overrides; with no `params/` anywhere above, the start folder itself.
    """
    if os.environ.get("COMPKIT_ROOT"):
        return Path(os.environ["COMPKIT_ROOT"]).resolve()
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "params").is_dir():
            return folder
    return start
