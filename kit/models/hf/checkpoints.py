"""Checkpoint folders: which are complete, and rotation by count and disk budget.

`Trainer._save_checkpoint` writes `checkpoint-N/` in place, file by file; a kill mid-save leaves
a folder that `get_last_checkpoint` would pick. The kit's trainer writes each checkpoint to a
staging folder, drops `COMPLETE_MARKER` into it, then renames it; resume only considers folders
with the marker.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

COMPLETE_MARKER = "kit_checkpoint_complete.json"
STAGING = ".staging"
CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_step(path: str | Path) -> int | None:
    """The step of a `checkpoint-N` folder, or None for another name."""
    match = CHECKPOINT_NAME.match(Path(path).name)
    return int(match[1]) if match else None


def complete_checkpoints(root: Path) -> list[Path]:
    """Checkpoint folders under `root` that were completely written, oldest step first."""
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        step = checkpoint_step(child)
        if step is not None and child.is_dir() and (child / COMPLETE_MARKER).is_file():
            found.append((step, child))
    return [path for _, path in sorted(found)]


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def rotate_checkpoints(root: Path, keep_last: int, best: Path | None,
                       disk_budget_bytes: float) -> int:
    """Keep the last `keep_last` complete checkpoints and the best, within the disk budget.

    The latest and the best are never deleted, even over budget. Returns the bytes kept.
    """
    checkpoints = complete_checkpoints(root)
    if not checkpoints:
        return 0
    protected = {checkpoints[-1]} | ({best} if best else set())
    recent = set(checkpoints[-max(1, keep_last):])
    kept = []
    for path in checkpoints:
        if path in protected or path in recent:
            kept.append(path)
        else:
            shutil.rmtree(path, ignore_errors=True)
    sizes = {path: folder_bytes(path) for path in kept}
    for path in list(kept):  # oldest first
        if sum(sizes.values()) <= disk_budget_bytes:
            break
        if path not in protected:
            shutil.rmtree(path, ignore_errors=True)
            sizes.pop(path)
    return sum(sizes.values())
