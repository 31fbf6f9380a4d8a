"""Test helper: run a search in its own process; optionally stop itself when a trial starts.

`python tests/search_worker.py ROOT PARAMS LOG [STOP_AT_RUN]` runs `run_search` with the project
at ROOT. Every trial that trains appends its run name to LOG; with STOP_AT_RUN the process stops
itself (SIGSTOP, see helpers/kill.py) as that trial begins training, after its run folder exists,
so the parent kills it exactly there.
"""

from __future__ import annotations

import sys
from pathlib import Path

from helpers.kill import stop_here  # tests/ is sys.path[0] when run as a script

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(root: str, params: str, log: str, stop_at: str = "") -> None:
    import kit.steps.train as train_step
    from kit.search.study import run_search

    real = train_step.train_models

    def logged(run, comp, callbacks=None, on_fold=None):
        with open(log, "a") as f:
            f.write(run.params.name + "\n")
        if run.params.name == stop_at:
            stop_here()
        return real(run, comp, callbacks=callbacks, on_fold=on_fold)

    train_step.train_models = logged
    run_search(params, root=Path(root))


if __name__ == "__main__":
    main(*sys.argv[1:])
