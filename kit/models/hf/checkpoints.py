"""Checkpoint folders: which are complete and intact, rotation, release, and a full disk.

`Trainer._save_checkpoint` writes `checkpoint-N/` in place, file by file; a kill mid-save leaves
a folder that `get_last_checkpoint` would pick. The kit's trainer writes each checkpoint to a
staging folder, drops `COMPLETE_MARKER` into it (with the size of every file, and the hash of
the small ones), then renames it; resume only considers folders with the marker whose files are
still what was written (`checkpoint_problem`). When a model or a fold has finished and its
predictions and export are saved, `release_checkpoints` deletes its checkpoints.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import re
import shutil
import struct
import time
import zipfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

COMPLETE_MARKER = "kit_checkpoint_complete.json"
STAGING = ".staging"
CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
# Files up to this size are hashed in the marker (trainer state, scheduler, RNG states, the
# tokenizer); larger ones (weights, optimizer) by size and structure: hashing gigabytes at every
# save and every resume would cost more than the truncations it guards against.
HASHED_BYTES = 16 * 1024**2
# What the kit itself leaves in a checkpoint folder: release removes these and nothing else.
KIT_FILES = ("kit_fingerprint.json",)


def checkpoint_step(path: str | Path) -> int | None:
    """The step of a `checkpoint-N` folder, or None for another name."""
    match = CHECKPOINT_NAME.match(Path(path).name)
    return int(match[1]) if match else None


def marked_checkpoints(root: Path) -> list[Path]:
    """Checkpoint folders under `root` with the completion marker, oldest step first."""
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        step = checkpoint_step(child)
        if step is not None and child.is_dir() and (child / COMPLETE_MARKER).is_file():
            found.append((step, child))
    return [path for _, path in sorted(found)]


def complete_checkpoints(root: Path) -> list[Path]:
    """Checkpoints under `root` that were completely written and are intact, oldest first.

    A marked checkpoint whose files were damaged since (`checkpoint_problem`) is left out with a
    warning naming the file, so resume takes the previous one; when none is usable, a warning
    says that training starts over.
    """
    usable, damaged = [], []
    for path in marked_checkpoints(root):
        problem = checkpoint_problem(path)
        if problem is None:
            usable.append(path)
            continue
        damaged.append(path)
        log.warning("Checkpoint %s is damaged: %s. It is skipped; an earlier complete checkpoint "
                    "is used if there is one.", path, problem)
    if damaged and not usable:
        log.warning(
            "No usable checkpoint in %s (%s damaged): training starts over from step 0, and its "
            "new checkpoints replace the damaged ones.", root, ", ".join(p.name for p in damaged))
    return usable


# -- the completion marker and what it records ------------------------------------------------
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_files(folder: Path) -> dict[str, dict[str, Any]]:
    """Every file under `folder` (bar the marker): its size, and its sha256 when small."""
    files = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.name == COMPLETE_MARKER:
            continue
        size = path.stat().st_size
        entry: dict[str, Any] = {"bytes": size}
        if size <= HASHED_BYTES:
            entry["sha256"] = _sha256(path)
        files[path.relative_to(folder).as_posix()] = entry
    return files


def write_marker(folder: Path, step: int, max_steps: int) -> None:
    """Mark a staged checkpoint complete, recording its files as they are now."""
    marker = {"step": step, "max_steps": max_steps, "time": time.time(),
              "files": describe_files(folder)}
    (folder / COMPLETE_MARKER).write_text(json.dumps(marker))


def _safetensors_problem(path: Path, size: int) -> str | None:
    """A safetensors file is 8 bytes of header length, the JSON header, then the tensors; the
    header's last data offset must end exactly at the end of the file (safetensors' format)."""
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return f"{path.name} is {size} bytes, too short for a safetensors header"
        (length,) = struct.unpack("<Q", head)
        if length > size - 8:
            return f"{path.name} is cut short: its header alone needs {length + 8} bytes"
        try:
            header = json.loads(fh.read(length))
        except ValueError:
            return f"{path.name} has an unreadable safetensors header"
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
    expected = 8 + length + max(ends, default=0)
    if expected != size:
        return (f"{path.name} is {size} bytes but its header describes {expected} (truncated "
                "or overwritten)")
    return None


def _torch_zip_problem(path: Path) -> str | None:
    """torch.save writes a zip archive; a cut one has lost its central directory at the end."""
    with open(path, "rb") as fh:
        if fh.read(4) != b"PK\x03\x04":
            return None  # not torch's zip format (an older pickle): nothing to check
    try:
        with zipfile.ZipFile(path) as archive:
            archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        return f"{path.name} is not a whole torch archive ({exc})"
    return None


def checkpoint_problem(folder: Path) -> str | None:
    """What is wrong with a marked checkpoint's files, or None when it is intact.

    Checks every file the marker records (present, same size, same hash for the small ones) and
    the structure of the weights and optimizer files; a marker from before files were recorded
    gets the structural checks only.
    """
    try:
        marker = json.loads((folder / COMPLETE_MARKER).read_text())
    except (OSError, ValueError):
        return f"{COMPLETE_MARKER} is unreadable"
    for name, entry in (marker.get("files") or {}).items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != entry["bytes"]:
            return f"{name} is {size} bytes, {entry['bytes']} when it was saved"
        if "sha256" in entry and _sha256(path) != entry["sha256"]:
            return f"{name} changed since it was saved (its sha256 differs)"
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        size = path.stat().st_size
        if path.suffix == ".safetensors":
            problem = _safetensors_problem(path, size)
        elif path.suffix in (".pt", ".pth", ".bin"):
            problem = _torch_zip_problem(path) if size else f"{path.name} is empty"
        else:
            problem = None
        if problem:
            return problem
    return None


# -- rotation and release ---------------------------------------------------------------------
def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def rotate_checkpoints(root: Path, keep_last: int, best: Path | None,
                       disk_budget_bytes: float) -> int:
    """Keep the last `keep_last` complete checkpoints and the best, within the disk budget.

    The latest and the best are never deleted, even over budget. Returns the bytes kept.
    """
    checkpoints = marked_checkpoints(root)  # no integrity check here: this runs at every save
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


def release_checkpoints(root: Path | None, keep: bool = False) -> int:
    """Delete a finished model's (or fold's) checkpoints; returns the bytes freed.

    Call it once the model's predictions and export are saved: nothing resumes from them then.
    Only what the kit wrote goes (`checkpoint-N/`, the staging folder, the fingerprint), and
    `root` itself when that leaves it empty, so a user's `transformer.checkpoint_dir` holding
    other files keeps them. `keep` (transformer.keep_checkpoints) keeps everything.
    """
    if keep or root is None or not Path(root).is_dir():
        return 0
    root = Path(root)
    doomed = [p for p in root.iterdir()
              if (p.is_dir() and (checkpoint_step(p) is not None or p.name == STAGING))
              or (p.is_file() and p.name in KIT_FILES)]
    freed = sum(folder_bytes(p) if p.is_dir() else p.stat().st_size for p in doomed)
    for path in doomed:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        root.rmdir()  # only when empty
    if doomed:
        log.info("Deleted the checkpoints in %s (%.1f MB): the model is finished and exported "
                 "(transformer.keep_checkpoints: true keeps them).", root, freed / 1024**2)
    return freed


# -- a full disk --------------------------------------------------------------------------------
# How a full disk shows while a checkpoint is written (seen on a 1 MB tmpfs, torch 2.13,
# safetensors 0.8.0): Python's own writes raise OSError(ENOSPC); safetensors raises
# SafetensorError("... No space left on device (os error 28)"); torch.save raises a RuntimeError
# ("unexpected pos ...") whose context is "basic_ios::clear: iostream error", naming no errno.
# So a failed save also counts as a full disk when the disk has (almost) no room left.
DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded", "StorageFull",
                   "os error 28", "os error 122")
NEARLY_FULL_BYTES = 64 * 1024**2


def is_disk_full(exc: BaseException, folder: Path) -> bool:
    """Whether `exc`, raised while writing into `folder`, is (most likely) a full disk."""
    seen: BaseException | None = exc
    for _ in range(8):  # the exception, its cause or context, and theirs
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(text in str(seen) for text in DISK_FULL_TEXTS):
            return True
        seen = seen.__cause__ or seen.__context__
    if not isinstance(exc, (OSError, RuntimeError)) and type(exc).__name__ != "SafetensorError":
        return False
    return free_bytes(folder) < NEARLY_FULL_BYTES


def free_bytes(folder: Path) -> int:
    """Free bytes on the disk holding `folder` (or its nearest existing parent)."""
    path = Path(folder)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def _size(n: float) -> str:
    return f"{n / 1024**3:.2f} GB" if n >= 1024**3 else f"{n / 1024**2:.1f} MB"


def disk_full_message(root: Path, step: int, keep_last: int) -> str:
    """What happened, where, how much is free, and what to do, after a full disk cut a save."""
    previous = marked_checkpoints(root)
    free = _size(free_bytes(root))
    if previous:
        need = _size(folder_bytes(previous[-1]))
        kept = (f"The previous checkpoint ({previous[-1]}) is intact; rerun the same command "
                f"to resume from it. One checkpoint takes {need}")
    else:
        kept = ("There is no earlier checkpoint, so a rerun starts from step 0. One checkpoint "
                "takes about the model's size plus twice that for the optimizer")
    return (
        f"The disk is full: saving checkpoint-{step} into {root} failed ({free} free there "
        f"now, after removing the half-written checkpoint). {kept}, and up to "
        f"transformer.save_total_limit ({keep_last}) + 1 (the best) + 1 (the one being written) "
        "of them are on disk at once. Fix: free space on that disk, lower "
        "transformer.save_total_limit (1 keeps only the latest and the best), or point "
        "transformer.checkpoint_dir at a disk with room."
    )
