"""Deterministic kills: a child stops itself (SIGSTOP) at a chosen point, then the parent kills it.

No sleeps decide where a kill lands: the child reaches the point, stops, and only then does the
parent send SIGKILL. Kill points come from a seeded RNG (`KIT_TEST_SEED`), printed by the test,
so a failure can be replayed with the same seed.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
from pathlib import Path

DEFAULT_SEED = 20261123


def kill_rng() -> tuple[random.Random, int]:
    """The RNG for kill points and its seed (`KIT_TEST_SEED`, else a fixed default)."""
    seed = int(os.environ.get("KIT_TEST_SEED", DEFAULT_SEED))
    return random.Random(seed), seed


def stop_here() -> None:
    """In the child: stop this process now; the parent's `kill_when_stopped` ends it."""
    os.kill(os.getpid(), signal.SIGSTOP)


def kill_when_stopped(proc: subprocess.Popen, timeout: float = 300.0) -> None:
    """In the parent: wait until `proc` has stopped itself, then SIGKILL it.

    Fails if the child exits instead of stopping (it never reached the kill point). `timeout`
    only bounds a hung child; it plays no part in where the kill lands.
    """
    import time

    deadline = time.monotonic() + timeout
    while True:
        pid, status = os.waitpid(proc.pid, os.WUNTRACED | os.WNOHANG)
        if pid and os.WIFSTOPPED(status):
            break
        if pid:  # exited or was killed before reaching the point
            proc.returncode = (-os.WTERMSIG(status) if os.WIFSIGNALED(status)
                               else os.WEXITSTATUS(status))
            raise AssertionError(
                f"the child ended (status {proc.returncode}) before its kill point")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the child did not reach its kill point within {timeout:.0f} s")
        time.sleep(0.05)  # polling interval only: the child is stopped or not, either way exact
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def cv_worker(root: Path, params: str, run: str, log: Path,
              kill_at: tuple[str, int] | None = None) -> subprocess.Popen:
    """Start tests/cv_worker.py training run `run` of `params` (relative to project `root`),
    logging each fit it starts to `log`; with `kill_at` (a fit as the log names it, a training
    step) it stops itself there for `kill_when_stopped`."""
    import sys

    worker = Path(__file__).resolve().parents[1] / "cv_worker.py"
    args = [sys.executable, str(worker), str(root), params, run, str(log)]
    return subprocess.Popen([*args, *map(str, kill_at or ())], cwd=root)


def kill_rerun_whole(root: Path, params: str, kill_at: tuple[str, int]) -> list[str]:
    """Run `killed` of `params` until `kill_at` and kill it there, rerun it to the end, then
    train run `whole` never killed; the fits each started, in order (`<run> <kind> <fit>`)."""
    log = root / "fits.log"
    kill_when_stopped(cv_worker(root, params, "killed", log, kill_at))
    assert cv_worker(root, params, "killed", log).wait() == 0, "the resumed run failed"
    assert cv_worker(root, params, "whole", log).wait() == 0, "the run never killed failed"
    return log.read_text().splitlines()
