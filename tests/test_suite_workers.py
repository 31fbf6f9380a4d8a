"""The test command's two xdist workers keep the stand-in Kaggle's tests in one worker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

SUITE = '''
import pytest

@pytest.fixture(scope="session")
def standin_server():
    return object()

@pytest.mark.parametrize("i", range(6))
def test_uses_the_standin(standin_server, i):
    pass

@pytest.mark.parametrize("i", range(6))
def test_other(i):
    pass
'''


def test_tests_of_the_standin_run_in_one_worker(tmp_path: Path):
    """Port 80 is bound once per process: the group must hold (it silently did not with
    pytest 9.2 and pytest-xdist 3.8, pytest-xdist #1386)."""
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import pytest_collection_modifyitems  # noqa: F401\n")
    (tmp_path / "test_suite.py").write_text(SUITE)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2",
         "--dist", "loadgroup", "-v", "test_suite.py"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    workers = {line.split("]")[0] for line in proc.stdout.splitlines()
               if "test_uses_the_standin" in line and "PASSED" in line}
    assert len(workers) == 1, proc.stdout
