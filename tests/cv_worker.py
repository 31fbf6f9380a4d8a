"""Test helper: train a k-fold run in its own process; optionally stop it inside one fold.

`python tests/cv_worker.py ROOT PARAMS RUN LOG [FOLD STEP]` trains every model of the run on
every fold (kit.steps.train.train_models), appending each fit it starts to LOG as
`<run> <kind> <fit>`: the fold's tag (`r0_f2`, `full` for the refit), and `<tag>/s<seed>` for one
seed's fit with `seeds`. With FOLD and STEP the process stops itself (SIGSTOP, see
helpers/kill.py) when the fit FOLD (a fit as logged) reaches training step STEP, for the parent
to SIGKILL it exactly there.
"""

from __future__ import annotations

import sys
from pathlib import Path

from helpers.kill import stop_here  # tests/ is sys.path[0] when run as a script

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(root: str, params: str, name: str, log: str, fold: str = "", step: str = "") -> None:
    import torch
    from transformers import TrainerCallback

    import kit.steps.train as train_step
    from kit.core.rundir import open_run
    from kit.data.competition import load_competition

    torch.set_num_threads(1)  # runs are compared bitwise

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == int(step):
                stop_here()

    real = train_step.fit_model

    def fit(kind, run, comp, f, tracker, callbacks=None):
        name = f.tag if f.seed is None else f"{f.tag}/s{f.seed}"
        with open(log, "a") as out:
            out.write(f"{run.params.name} {kind} {name}\n")
        extra = [StopAt()] if name == fold else []
        return real(kind, run, comp, f, tracker, [*(callbacks or []), *extra])

    train_step.fit_model = fit
    run = open_run(params, name, root=Path(root))
    train_step.train_models(run, load_competition(run.params, run.root))


if __name__ == "__main__":
    main(*sys.argv[1:])
