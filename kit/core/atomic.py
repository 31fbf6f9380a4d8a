"""Atomic writes (files, JSON, .npz, whole folders): a kill mid-write never leaves a torn one."""

from __future__ import annotations

import enum
import io
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np


def fsync_dir(folder: Path) -> None:
    """Make a rename durable; some filesystems (and Windows) cannot open a folder: skip."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """Flush every file under `folder` to disk, then the folders' entries (deepest first)."""
    folder = Path(folder)
    folders = [folder]
    for path in folder.rglob("*"):
        if path.is_dir():
            folders.append(path)
        elif path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    for sub in sorted(folders, key=lambda p: len(p.parts), reverse=True):
        fsync_dir(sub)


def write_temp(folder: Path, name: str, data: bytes) -> Path:
    """`data` in a fsynced temp file in `folder` (same filesystem, so a rename is atomic)."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def write_atomic(path: Path, data: bytes | str) -> Path:
    """Replace `path` with `data` all at once: readers see the old file or the new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = write_temp(path.parent, path.name, data.encode() if isinstance(data, str) else data)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


@contextmanager
def atomic_text_file(path: Path) -> Iterator[IO[str]]:
    """A text file written in pieces that appears at `path` whole when the block ends, or never.

    For output too large to build in memory first (e.g. predictions streamed chunk by chunk).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_json(path: Path, data: Any, indent: int = 2, *, any_as_str: bool = False) -> Path:
    """`data` as JSON, atomically; numpy values, paths, dtypes, enums and sets are converted.

    `any_as_str`: any other object is written as its `str` (reports of third-party objects).
    """
    def default(value: Any) -> Any:
        try:
            return to_jsonable(value)
        except TypeError:
            if any_as_str:
                return str(value)
            raise

    return write_atomic(path, json.dumps(data, indent=indent, default=default))


def to_jsonable(value: Any) -> Any:
    """The kit's one JSON encoder for values the json module does not know (`default=`)."""
    if isinstance(value, np.generic):
        value = value.item()
        return None if isinstance(value, float) and not math.isfinite(value) else value
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (Path, torch_dtype_types())):
        return str(value).replace("torch.", "")
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    if isinstance(value, enum.Enum):
        return value.value
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def torch_dtype_types() -> tuple[type, ...]:
    """torch.dtype when torch is already imported (never imported just for this)."""
    torch = sys.modules.get("torch")
    return (torch.dtype,) if torch is not None else ()


def save_npz(path: Path, **arrays: np.ndarray) -> Path:
    """numpy arrays as one .npz, atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return write_atomic(path, buffer.getvalue())


@contextmanager
def staged_folder(target: Path) -> Iterator[Path]:
    """Build a folder in a staging path, then put it at `target` in one rename.

    A kill while building leaves the old `target` (or none), never a half-written one; the
    staging folder of an earlier, killed attempt is cleared first.
    """
    target = Path(target)
    staging = target.with_name(f".{target.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    fsync_dir(target.parent)
