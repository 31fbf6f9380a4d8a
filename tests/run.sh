#!/usr/bin/env bash
# The test command: sets up the environment on a fresh machine (as run_all.sh does), then runs
# ruff and the whole test suite, notebooks included. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./run_all.sh --setup-only
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
"$PY" -m ruff check kit tests bench
exec "$PY" -m pytest -q -p no:cacheprovider "$@"
