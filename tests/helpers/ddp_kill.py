"""A callback that kills rank 0 of a DDP job at a chosen step: the kill lands exactly there, and
the launcher (torchrun) then ends the other ranks, which cannot pass the next collective step."""

from __future__ import annotations

import os
import signal
from typing import Any

from transformers import TrainerCallback


class KillJobAtStep(TrainerCallback):
    """At the end of optimizer step `step`, rank 0 SIGKILLs itself."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.step and int(os.environ.get("RANK", "0")) == 0:
            os.kill(os.getpid(), signal.SIGKILL)
