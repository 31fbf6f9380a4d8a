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
