"""A training process killed at a random step, then killed in the middle of a checkpoint write,
then run again, ends exactly where an uninterrupted run ends: same step, same predictions, and
the same examples in the same order (none skipped, none repeated)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import resume_worker as rw
import torch
from safetensors.torch import load_file

from kit.models.hf.checkpoints import COMPLETE_MARKER, complete_checkpoints
from tests.helpers.kill import kill_rng, kill_when_stopped

WORKER = Path(rw.__file__)
BATCH, ACCUM, EPOCHS, SAVE_EVERY = 4, 2, 10, 10
N_TRAIN = 96
BATCHES_PER_EPOCH = N_TRAIN // BATCH  # 24
STEPS = EPOCHS * BATCHES_PER_EPOCH // ACCUM  # 120


def cfg(model_dir: Path) -> dict:
    return {
        "model": str(model_dir), "max_length": 48, "epochs": float(EPOCHS), "batch_size": BATCH,
        "grad_accum": ACCUM, "eval_batch_size": 16, "lr": 3e-3, "eval_steps": SAVE_EVERY,
        "save_steps": SAVE_EVERY, "warmup_ratio": 0.1, "save_total_limit": 1,
        "early_stopping_patience": 3, "class_weights": "sqrt", "label_smoothing": 0.05,
    }


def train_batches(trace: Path) -> list[list[str]]:
    """Batches of training examples, in the order they were collated."""
    if not trace.exists():
        return []
    batches = [json.loads(line) for line in trace.read_text().splitlines() if line.strip()]
    return [b for b in batches if b and all(i.startswith("train:") for i in b)]


def start(spec: dict, tmp: Path, name: str) -> subprocess.Popen:
    spec = {**spec, "out": str(tmp / name), "trace": str(tmp / f"{name}.trace")}
    path = tmp / f"{name}.spec.json"
    path.write_text(json.dumps(spec))
    log = open(tmp / f"{name}.log", "w")  # noqa: SIM115 - closed by the OS with the child
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([sys.executable, str(WORKER), str(path)], stdout=log,
                            stderr=subprocess.STDOUT, env=env)


@pytest.mark.slow
def test_killed_anywhere_then_resumed_equals_uninterrupted(tiny_model, tmp_path):
    # Uninterrupted reference, in this process (same single thread as the workers).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ref_trace = tmp_path / "ref.trace"
    splits = rw.toy_task()
    from transformers import AutoTokenizer

    undo = rw.install_trace(ref_trace, rw.id_map(AutoTokenizer.from_pretrained(tiny_model),
                                                 splits, 48))
    try:
        ref = rw.run({"cfg": cfg(tiny_model), "work_dir": str(tmp_path / "ref")})
    finally:
        undo()
        torch.set_num_threads(threads)
    ref_batches = train_batches(ref_trace)
    final = ref.global_step  # early stopping (patience 3) may end it before STEPS
    assert ref.completed and ref.max_steps == STEPS and 6 * SAVE_EVERY <= final <= STEPS
    # accelerate's DataLoaderShard collates one batch ahead, so a run that stops mid-epoch has
    # collated (not trained) one batch more than it trained.
    assert final * ACCUM <= len(ref_batches) <= final * ACCUM + 1
    for e in range(final * ACCUM // BATCHES_PER_EPOCH):  # each epoch: every example exactly once
        batches = ref_batches[e * BATCHES_PER_EPOCH : (e + 1) * BATCHES_PER_EPOCH]
        epoch = [i for b in batches for i in b]
        assert sorted(epoch) == sorted(f"train:{i}" for i in range(N_TRAIN))

    spec = {"cfg": cfg(tiny_model), "work_dir": str(tmp_path / "run")}
    ckpts = tmp_path / "run" / "checkpoints"

    # 1) SIGKILL from outside at a seeded training batch after the first checkpoint: the child
    #    stops itself right after collating that batch, then the parent kills it.
    rng, seed = kill_rng()
    kill_after = rng.randrange(SAVE_EVERY * ACCUM + 2, (final - SAVE_EVERY) * ACCUM)
    print(f"killing run A at training batch {kill_after} (KIT_TEST_SEED={seed})")
    proc = start({**spec, "stop_at_train_batch": kill_after}, tmp_path, "a")
    kill_when_stopped(proc)
    assert proc.returncode == -signal.SIGKILL
    assert len(train_batches(tmp_path / "a.trace")) == kill_after
    done = complete_checkpoints(ckpts)
    assert done, "no complete checkpoint before the kill"
    step_a = int(done[-1].name.split("-")[1])
    assert 0 < step_a < final

    # 2) Resume; SIGKILL itself while writing the next checkpoint (weights written, RNG not).
    kill_step = step_a + SAVE_EVERY
    proc = start({**spec, "kill_in_save_at_step": kill_step}, tmp_path, "b")
    assert proc.wait(timeout=240) == -signal.SIGKILL, (tmp_path / "b.log").read_text()[-3000:]
    assert "resumed from step" in (tmp_path / "b.log").read_text()
    staged = ckpts / ".staging" / f"checkpoint-{kill_step}"
    assert (staged / "model.safetensors").exists(), "the kill did not happen mid-save"
    assert not (staged / COMPLETE_MARKER).exists()
    assert not (ckpts / f"checkpoint-{kill_step}").exists()
    assert complete_checkpoints(ckpts)[-1].name == f"checkpoint-{step_a}"

    # 3) Resume to the end: from step_a, ignoring the half-written checkpoint.
    proc = start(spec, tmp_path, "c")
    assert proc.wait(timeout=240) == 0, (tmp_path / "c.log").read_text()[-3000:]
    log_c = (tmp_path / "c.log").read_text()
    assert f"resumed from step {step_a} of {STEPS}" in log_c
    result = json.loads((tmp_path / "c.json").read_text())
    assert result["global_step"] == final and result["resumed_from_step"] == step_a
    assert not (ckpts / ".staging").exists()

    with np.load(tmp_path / "c.npz") as probs:
        np.testing.assert_allclose(probs["val_probs"], ref.val_probs, rtol=0, atol=1e-6)
        np.testing.assert_allclose(probs["test_probs"], ref.test_probs, rtol=0, atol=1e-6)
        bitwise = np.array_equal(probs["val_probs"], ref.val_probs)
    print(f"resume at {step_a} (and {kill_step} mid-save): bitwise equal = {bitwise}")

    # The same evaluations along the way, and the same final weights (the predictions come from
    # the best checkpoint, which may predate the kills).
    def evals(history):
        return [(h["step"], h["eval_loss"], h["eval_f1_macro"])
                for h in history if "eval_loss" in h]

    assert len(evals(result["history"])) == len(evals(ref.history)) == final // SAVE_EVERY
    np.testing.assert_allclose(evals(result["history"]), evals(ref.history), rtol=0, atol=1e-6)
    last = f"checkpoint-{final}/model.safetensors"
    mine, theirs = load_file(ckpts / last), load_file(tmp_path / "ref" / "checkpoints" / last)
    for name, tensor in theirs.items():
        torch.testing.assert_close(mine[name], tensor, rtol=0, atol=1e-6)

    # Data order: what was trained = A up to its checkpoint, then C; it equals the reference.
    a, b, c = (train_batches(tmp_path / f"{n}.trace") for n in "abc")
    assert a[: step_a * ACCUM] == ref_batches[: step_a * ACCUM]
    assert b[: SAVE_EVERY * ACCUM] == ref_batches[step_a * ACCUM : kill_step * ACCUM]
    assert a[: step_a * ACCUM] + c == ref_batches
