#!/usr/bin/env bash
# The test command: sets up the environment on a fresh machine (as run_all.sh does), then runs
# ruff and the whole test suite, notebooks included. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
./run_all.sh --setup-only
# The page test drives Debian's Chromium (a browser that downloads itself cannot be had here).
if ! command -v chromedriver >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "Installing chromium and chromium-driver (browser test) ..." >&2
  { apt-get update -qq && apt-get install -y -qq chromium chromium-driver; } >/dev/null 2>&1 \
    || echo "Could not install chromium; the browser test will say so." >&2
fi
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
"$PY" -m ruff check kit tests bench
# Two workers (pytest-xdist; TEST_WORKERS=0 runs in one process): tests that share the stand-in
# Kaggle on port 80 go to one worker together (tests/conftest.py). The slowest tests are listed.
exec "$PY" -m pytest -q -p no:cacheprovider -n "${TEST_WORKERS:-2}" --dist loadgroup \
  --durations=25 "$@"
