"""The process the DDP launcher starts on each rank: read the pickled call, train, hand back.

`launch_training` (distributed.py) runs `python -m kit.models.hf.ddp_worker <spec>` under
torchrun/accelerate; rank 0 writes the result that the launching process reads.
"""

from __future__ import annotations

import logging
import os
import pickle
import sys
from pathlib import Path

from kit.core.atomic import write_atomic
from kit.core.logs import show_logs
from kit.core.progress import FILE_ENV
from kit.models.hf.distributed import RESULT_FILE, is_main_process
from kit.models.hf.train import train_transformer

__all__ = ["run_rank"]


def run_rank(spec: str) -> None:
    """Train this rank's share of the call pickled at `spec`; rank 0 writes the result."""
    show_logs(logging.INFO if is_main_process() else logging.WARNING)  # one progress log
    if not is_main_process():
        os.environ.pop(FILE_ENV, None)  # and one progress file for ./run_all.sh: rank 0's
    call = pickle.loads(Path(spec).read_bytes())
    result = train_transformer(**call)  # `callbacks`, if any, were pickled with the call
    if is_main_process():
        write_atomic(Path(call["work_dir"]) / RESULT_FILE, pickle.dumps(result))
    # Every rank waits for rank 0's export and result, then leaves the group cleanly: a rank
    # that exits while the others still use the group aborts (gloo), and the launcher then
    # ends rank 0 mid-write.
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    run_rank(sys.argv[1])
