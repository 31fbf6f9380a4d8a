"""Progress as one plain text line: logged every so often, and kept in a file for run_all.sh.

A headless run (papermill, a Kaggle commit, CI) cannot show progress bars: tqdm redraws with
`\\r`, and transformers' notebook bar is an HTML widget that a log records as
`<IPython.core.display.HTML object>`. Long steps report through `ProgressLine` instead: it logs
the latest line at most every `KIT_PROGRESS_INTERVAL` seconds (30 by default) and, when
`KIT_PROGRESS_FILE` is set (./run_all.sh sets it per notebook), keeps the latest line in that
file, replaced atomically every couple of seconds, for run_all.sh to show while it waits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from kit.core.atomic import write_atomic
from kit.errors import KitError

__all__ = [
    "FILE_ENV",
    "INTERVAL_ENV",
    "ProgressLine",
    "count_line",
    "format_duration",
    "log_interval",
    "progress_stage",
    "show_progress",
]

FILE_ENV = "KIT_PROGRESS_FILE"
INTERVAL_ENV = "KIT_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 30.0
FILE_INTERVAL = 2.0  # run_all.sh reads the file about this often
_stage: list[str] = []  # what the lines are about, outermost first: ["transformer fold 2/5"]


@contextlib.contextmanager
def progress_stage(label: str) -> Iterator[None]:
    """Prefix every progress line made inside the block with `label | ` (a k-fold run: which
    fold the step counts belong to)."""
    _stage.append(label)
    try:
        yield
    finally:
        _stage.pop()


def format_duration(seconds: float) -> str:
    """`45s`, `1m12s`, `2h05m`: short enough for one terminal line."""
    s = max(0, round(seconds))
    hours, rest = divmod(s, 3600)
    minutes, s = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{s:02d}s" if minutes else f"{s}s"


def count_line(what: str, done: int, total: int, elapsed: float, done_here: int,
               unit: str = "") -> str:
    """`what done/total (p%) | elapsed | ETA`, the ETA from the `done_here` counted in `elapsed`.

    `done_here` excludes work done before this process (a resumed run): counting it would make
    the rate look as if those steps took no time.
    """
    pct = 100 * done // total if total > 0 else 0  # floor: 100% only when done
    if done >= total > 0:
        eta = "0s"
    elif done_here > 0:
        eta = format_duration((total - done) * elapsed / done_here)
    else:
        eta = "?"
    return (f"{what} {done}/{total}{unit} ({pct}%) | {format_duration(elapsed)} elapsed"
            f" | ETA {eta}")


def log_interval() -> float:
    """Seconds between logged progress lines: `KIT_PROGRESS_INTERVAL`, else 30."""
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_INTERVAL
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value < 0:
        raise KitError(f"{INTERVAL_ENV} is {raw!r}; set it to the seconds between progress lines, "
                       "e.g. 30 (0: a line at every update).")
    return value


class ProgressLine:
    """The latest progress line of one task: logged at most every `interval` seconds and kept in
    the progress file (`path`, default `$KIT_PROGRESS_FILE`) at most every `file_interval`
    seconds; `update(..., force=True)` does both at once (a start, an evaluation, the end).

    `clock` is a function so that tests can drive it with a fake one.
    """

    def __init__(self, logger: logging.Logger, *, interval: float | None = None,
                 file_interval: float = FILE_INTERVAL,
                 clock: Callable[[], float] = time.monotonic,
                 path: str | os.PathLike | None = None):
        self.logger = logger
        self.interval = log_interval() if interval is None else float(interval)
        self.file_interval = float(file_interval)
        self.clock = clock
        if path is None:
            path = os.environ.get(FILE_ENV) or None
        self.path = Path(path) if path is not None else None
        self.latest: str | None = None
        self._logged: str | None = None
        self._logged_at: float | None = None
        self._written: str | None = None
        self._written_at: float | None = None

    def update(self, line: str, force: bool = False) -> None:
        """Make `line` the latest; log it and write the file if due (or `force`).

        A line identical to the one logged (written) last is not logged (written) again.
        """
        if _stage and not line.startswith(_stage[-1]):
            line = " | ".join([*_stage, line])
        t = self.clock()
        due = force or self._logged_at is None or t - self._logged_at >= self.interval
        logged = due and line != self._logged
        if logged:
            self.logger.info(line)
            self._logged_at = t
            self._logged = line
        self.latest = line
        if self.path is not None and line != self._written and (
            force or logged or self._written_at is None
            or t - self._written_at >= self.file_interval
        ):
            self._write(line)
            self._written = line
            self._written_at = t

    def _write(self, line: str) -> None:
        try:
            write_atomic(self.path, line + "\n")
        except OSError as err:  # a display aid: never the reason a training run fails
            self.logger.warning(f"Cannot write the progress file {self.path} ({err}); progress "
                                "goes to the log only.")
            self.path = None


def show_progress(logger: logging.Logger, line: str) -> None:
    """Log `line` now and make it the progress file's line (the start or end of a long step)."""
    ProgressLine(logger, interval=0).update(line, force=True)
