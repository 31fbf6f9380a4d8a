"""Data-parallel training on several GPUs: one process per GPU, each with its own model copy.

`transformer.distributed` chooses: `auto` trains with DDP when two or more GPUs are visible (a
Kaggle T4 x2) and in this process with one; `off` never launches; `ddp` insists. The calling
process (a notebook cell, ./run_all.sh) does not train itself: `launch_training` starts
`accelerate launch --multi_gpu` (on CPU, for tests: `torchrun` with gloo, since accelerate's
multi-CPU launch needs MPI) as a child process group running kit.models.hf.ddp_worker, and
every rank calls `train_transformer` with the same arguments. A child process, rather than
`notebook_launcher`'s fork, works the same from a notebook and a script, and after CUDA was
initialised by the hardware detection. Rank 0 writes the result; the caller reads it back.

What keeps a DDP run exactly resumable (kit.models.hf.trainer): the data order comes from the
(seed, epoch)-seeded sampler over the global batch, which accelerate deals out to the ranks
batch by batch; Trainer saves one RNG state file per rank; the checkpoint is staged by all ranks
and made complete by rank 0 between barriers. Predictions are computed on a share of the texts
per rank and gathered back in input order (`predict_probs_gathered`).
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kit.core.atomic import write_atomic
from kit.errors import KitError

__all__ = [
    "DISTRIBUTED_MODES",
    "barrier",
    "is_main_process",
    "launch_command",
    "launch_training",
    "launched_world_size",
    "local_rank",
    "predict_probs_gathered",
    "processes_for",
    "replay_logs",
    "visible_gpus",
]

DISTRIBUTED_MODES = ("auto", "off", "ddp")
SPEC_FILE = "distributed_call.pkl"
RESULT_FILE = "distributed_result.pkl"

log = logging.getLogger(__name__)
ranks_log = logging.getLogger("kit.ddp")  # the ranks' own output, passed on


def visible_gpus() -> int:
    """CUDA devices this process sees (0 without CUDA); a function so tests can fake it."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def launched_world_size() -> int:
    """Processes in the distributed job this process belongs to (1 when not launched)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    """This process's rank on its machine (its GPU index under DDP); 0 when not launched."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    """True in a single process and in rank 0 of a distributed job."""
    return int(os.environ.get("RANK", "0")) == 0


def barrier() -> None:
    """Wait for every rank (nothing to wait for in a single process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def processes_for(setting: str, n_gpus: int) -> int:
    """How many training processes `transformer.distributed` asks for with `n_gpus` visible."""
    if setting not in DISTRIBUTED_MODES:
        raise KitError(f"transformer.distributed is {setting!r}; use auto, off or ddp.")
    if setting == "off" or (setting == "auto" and n_gpus < 2):
        return 1
    if n_gpus < 2:
        raise KitError(
            f"transformer.distributed is ddp, but {n_gpus} GPU(s) are visible: data-parallel "
            "training needs two or more (e.g. a Kaggle T4 x2). Use distributed: auto (DDP "
            "only where there are several GPUs) or off."
        )
    return n_gpus


def launch_command(num_processes: int, *, cpu: bool, port: int) -> list[str]:
    """The command that starts `num_processes` ranks of this module."""
    if cpu:
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                str(num_processes), "--master_addr", "127.0.0.1", "--master_port", str(port)]
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
            str(num_processes), "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no", "--main_process_port", str(port)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_training(call: dict[str, Any], work_dir: Path, num_processes: int, *,
                    cpu: bool = False, env: dict[str, str] | None = None) -> Any:
    """Run `train_transformer(**call)` in `num_processes` DDP ranks; rank 0's result.

    `call` holds train_transformer's arguments (picklable: callbacks that hold open handles,
    such as a tracking client, stay in the caller). The ranks' output comes back as log
    messages of the `kit.ddp` logger.
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    spec = work_dir / SPEC_FILE
    write_atomic(spec, pickle.dumps(call))
    (work_dir / RESULT_FILE).unlink(missing_ok=True)
    cmd = [*launch_command(num_processes, cpu=cpu, port=_free_port()),
           "-m", "kit.models.hf.ddp_worker", str(spec)]
    child_env = {**os.environ, **(env or {})}
    if cpu:
        child_env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # gloo's hostname lookup is flaky
    root = str(Path(__file__).resolve().parents[3])  # the kit importable in every rank
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (root, child_env.get("PYTHONPATH", "")) if p)
    log.info("training in %d processes (DDP): %s", num_processes, " ".join(cmd))
    # A session of its own: signals meant for the job never reach the caller. The ranks'
    # output is passed on line by line as log messages: a notebook shows only what its own
    # process writes, not what a child writes to the inherited terminal.
    proc = subprocess.Popen(cmd, env=child_env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace")
    try:
        for line in proc.stdout:
            ranks_log.info("%s", line.rstrip("\n"))
        code = proc.wait()
    except BaseException:  # e.g. an interrupted notebook cell: the launcher ends its ranks
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        raise
    result_path = work_dir / RESULT_FILE
    if code != 0 or not result_path.is_file():
        raise KitError(
            f"distributed training ({num_processes} processes) ended with exit status {code} "
            f"and no result in {result_path}; its log is above. Run the same call again to "
            "resume from the last complete checkpoint, or set transformer.distributed: off."
        )
    result = pickle.loads(result_path.read_bytes())
    result_path.unlink()
    spec.unlink(missing_ok=True)
    return result


def replay_logs(callbacks: list[Any], history: list[dict[str, Any]]) -> None:
    """Give `callbacks` (TrainerCallbacks) each logged entry of a run trained in the ranks, at
    its step, as Trainer would have while training (an entry is the logs plus their step)."""
    from types import SimpleNamespace

    for entry in history:
        state = SimpleNamespace(global_step=int(entry.get("step", 0)))
        logs = {k: v for k, v in entry.items() if k != "step"}
        for callback in callbacks:
            callback.on_log(None, state, None, logs=logs)


def predict_probs_gathered(predict: Callable[[list[str]], np.ndarray],
                           texts: list[str]) -> np.ndarray:
    """`predict(texts)` with each rank taking every world-size-th text, gathered in input order.

    In a single process this is just `predict(texts)`.
    """
    import torch.distributed as dist

    if (not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1
            or not texts):  # every rank holds the same texts: all take this branch or none
        return predict(texts)
    world, rank = dist.get_world_size(), dist.get_rank()
    mine = np.arange(rank, len(texts), world)
    probs = predict([texts[i] for i in mine])
    shares: list[Any] = [None] * world
    dist.all_gather_object(shares, (mine, probs))
    width = max((p.shape[1] for _, p in shares if p.ndim == 2 and len(p)), default=0)
    out = np.zeros((len(texts), width), dtype=np.float64)
    for idx, p in shares:
        if len(idx):
            out[idx] = p
    return out
