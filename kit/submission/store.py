"""Keeping every submission: numbered, atomically written files and an append-only log.

`save_submission` writes `run_dir/submission.csv` (the latest, the name Kaggle notebooks
submit) and `run_dir/submissions/submission_NNN.csv`, a copy that is never overwritten.
`log_submission` appends one row per attempt, dry runs and failures included, to a CSV log
(`outputs/submissions.csv`) with the sha256 of the file, so any leaderboard score can be traced
back to the exact bytes sent.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from kit.core.atomic import fsync_dir, write_atomic, write_temp
from kit.errors import KitError
from kit.kaggle.cli import redact

__all__ = ["LOG_COLUMNS", "log_submission", "read_log", "save_submission", "sha256_of"]

LOG_COLUMNS = [
    "time_utc", "run", "file", "sha256", "message", "model", "local_public", "local_private",
    "validation", "dry_run", "ok", "kaggle_answer",
]
_NUMBERED = re.compile(r"^submission_(\d+)\.csv$")


def _write_new(folder: Path, data: bytes) -> Path:
    """`data` as the next `submission_NNN.csv` in `folder`; never replaces an existing file."""
    while True:
        taken = [int(m.group(1)) for p in folder.iterdir() if (m := _NUMBERED.match(p.name))]
        target = folder / f"submission_{max(taken, default=0) + 1:03d}.csv"
        tmp = write_temp(folder, target.name, data)
        try:
            os.link(tmp, target)  # fails if target exists: no overwrite even under a race
        except FileExistsError:
            continue  # another writer took this number: pick the next
        except OSError:
            # No hard links here (e.g. a Google Drive mount): check, then rename.
            if target.exists():
                continue
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(folder)
        return target


def save_submission(df: pd.DataFrame, run_dir: str | Path) -> Path:
    """Write `df` to `run_dir/submission.csv` and a new numbered copy; return the copy's path.

    The numbered copy (`run_dir/submissions/submission_001.csv`, `_002`, …) is never
    overwritten, so it is the file to submit and log. Both writes are atomic: a crash leaves
    the previous files intact and no partial file.
    """
    if not isinstance(df, pd.DataFrame):
        raise KitError(
            f"save_submission needs a pandas DataFrame, got {type(df).__name__}. "
            "Fix: build the submission with the sample_submission.csv columns as a DataFrame."
        )
    run_dir = Path(run_dir)
    folder = run_dir / "submissions"
    folder.mkdir(parents=True, exist_ok=True)
    data = df.to_csv(index=False).encode("utf-8")
    numbered = _write_new(folder, data)
    write_atomic(run_dir / "submission.csv", data)
    return numbered


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _score(value: float | None, name: str) -> float | str:
    if value is None:
        return ""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise KitError(f"log_submission: {name}={value!r} is not a number. "
                       f"Fix: pass a float score or None.") from None


def log_submission(
    log_path: str | Path,
    *,
    run: str,
    file: str | Path,
    message: str,
    model: str,
    local_public: float | None,
    local_private: float | None,
    validation: float | None,
    kaggle_answer: str,
    ok: bool,
    dry_run: bool,
) -> dict:
    """Append one submission attempt to the CSV log at `log_path`; return the row.

    The header is written once, when the log is new. Each row is flushed and fsynced, so a
    crash loses at most the row being written. Free text passes through `redact`: no token or
    key ever lands in the log. The sha256 is empty when the file is not local (code
    competitions submit a notebook's output).
    """
    log_path = Path(log_path)
    file = Path(file)
    row = {
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": redact(str(run)),
        "file": str(file),
        "sha256": sha256_of(file) if file.is_file() else "",
        "message": redact(str(message)),
        "model": redact(str(model)),
        "local_public": _score(local_public, "local_public"),
        "local_private": _score(local_private, "local_private"),
        "validation": _score(validation, "validation"),
        "dry_run": bool(dry_run),
        "ok": bool(ok),
        "kaggle_answer": redact(" ".join(str(kaggle_answer).split())),
    }
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if log_path.exists() and log_path.stat().st_size > 0:
        with open(log_path, newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), [])
        if header != LOG_COLUMNS:
            raise KitError(
                f"{log_path} has columns {header}, not the submission log's {LOG_COLUMNS}. "
                "Fix: move that file aside (it is not a compkit submission log) and log again."
            )
        new = False
    else:
        new = True
    with open(log_path, "a", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOG_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow(row)
        fh.flush()
        os.fsync(fh.fileno())
    return row


def read_log(log_path: str | Path) -> pd.DataFrame:
    """The submission log as a DataFrame (empty, with the log's columns, if there is none yet)."""
    log_path = Path(log_path)
    if not log_path.exists() or log_path.stat().st_size == 0:
        return pd.DataFrame(columns=LOG_COLUMNS)
    return pd.read_csv(log_path, dtype={"run": str, "file": str, "sha256": str, "message": str,
                                        "model": str, "kaggle_answer": str},
                       keep_default_na=False, na_values={"local_public": [""],
                                                         "local_private": [""],
                                                         "validation": [""]})
