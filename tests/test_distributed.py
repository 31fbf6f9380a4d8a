"""Data-parallel training (kit.models.hf.distributed): when it launches, and two CPU ranks (gloo)
training like one process with the same global batch, and resuming exactly after a kill."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import resume_worker as rw
from helpers.ddp_kill import KillJobAtStep
from transformers import TrainerCallback

from kit.config.params import TransformerParams
from kit.errors import KitError
from kit.models.hf import distributed
from kit.models.hf.train import train_transformer

pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["fruit", "vehicle", "colour"]
TESTS = Path(__file__).resolve().parent


def call(model: Path, work_dir: Path, **over) -> dict:
    """train_transformer's arguments for the toy task; `over` changes the params."""
    base = dict(model=str(model), max_length=48, max_steps=12, batch_size=8, eval_batch_size=16,
                lr=5e-3, eval_steps=4, save_steps=4, warmup_ratio=0.1, save_total_limit=1,
                class_weights="none", checkpoint_fsync=False)
    splits = rw.toy_task()
    (tx, ty), (vx, vy), (sx, _) = splits["train"], splits["val"], splits["test"]
    return dict(train_texts=tx, train_labels=ty, val_texts=vx, val_labels=vy, test_texts=sx,
                task="multiclass", label_names=NAMES,
                cfg=TransformerParams(**{**base, **over}), seed=7, work_dir=work_dir)


def ddp(kwargs: dict, **launch) -> object:
    return distributed.launch_training(kwargs, kwargs["work_dir"], 2, cpu=True,
                                       env={"PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1"},
                                       **launch)


@pytest.fixture(scope="module")
def still_model(tmp_path_factory) -> Path:
    """The tiny BERT without dropout: one process and two ranks then compute the same steps."""
    folder = rw.build_tiny_model(tmp_path_factory.mktemp("still") / "bert")
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_processes_follow_the_visible_gpus():
    assert [distributed.processes_for("auto", n) for n in (0, 1, 2, 4)] == [1, 1, 2, 4]
    assert distributed.processes_for("off", 2) == 1
    assert distributed.processes_for("ddp", 2) == 2
    with pytest.raises(KitError, match="two or more"):
        distributed.processes_for("ddp", 1)
    cmd = distributed.launch_command(2, cpu=False, port=29999)
    assert cmd[1:4] == ["-m", "accelerate.commands.launch", "--multi_gpu"] and "2" in cmd


def test_one_visible_gpu_trains_here_and_two_launch(tiny_model, tmp_path, monkeypatch):
    launched, logged = [], []
    ranks_result = SimpleNamespace(history=[{"loss": 0.5, "epoch": 0.1, "step": 4}])

    def fake_launch(kwargs, work_dir, processes, **_):
        launched.append(processes)
        return ranks_result

    class Recorder(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            logged.append((state.global_step, logs))

    monkeypatch.setattr(distributed, "launch_training", fake_launch)
    monkeypatch.setattr(distributed, "visible_gpus", lambda: 2)
    two = call(tiny_model, tmp_path / "two", max_steps=2)
    assert train_transformer(**two, callbacks=[Recorder()]) is ranks_result
    assert launched == [2]
    assert logged == [(4, {"loss": 0.5, "epoch": 0.1})]  # the ranks' logs reach the tracker
    monkeypatch.setattr(distributed, "visible_gpus", lambda: 1)
    result = train_transformer(**call(tiny_model, tmp_path / "one", max_steps=2))
    assert launched == [2] and result.global_step == 2  # trained here, no process launched


@pytest.mark.slow
def test_two_cpu_ranks_train_like_one_process_with_the_same_global_batch(still_model, tmp_path,
                                                                         capsys):
    single = train_transformer(**call(still_model, tmp_path / "single", batch_size=8))
    capsys.readouterr()
    both = ddp(call(still_model, tmp_path / "ddp", batch_size=4))  # 2 ranks x 4 = 8
    shown = capsys.readouterr().out  # the ranks' output, passed on as the kit's log lines
    assert "step 12/12" in shown and "torch.distributed.run" in shown
    assert both.global_step == single.global_step == 12
    assert both.test_probs.shape == single.test_probs.shape == (20, 3)
    np.testing.assert_allclose(both.val_probs, single.val_probs, atol=1e-4)
    np.testing.assert_allclose(both.test_probs, single.test_probs, atol=1e-4)
    assert abs(both.history[-1]["train_loss"] - single.history[-1]["train_loss"]) < 1e-4
    assert (tmp_path / "ddp" / "model").is_dir()  # rank 0 exported the model
    last = tmp_path / "ddp" / "checkpoints" / "checkpoint-12"
    assert (last / "rng_state_1.pth").is_file()  # two ranks really trained
    assert not list((tmp_path / "ddp").glob("distributed_*.pkl"))  # the hand-over is cleared


def test_a_finished_ddp_run_is_returned_without_launching_again(tiny_model, tmp_path,
                                                                 monkeypatch):
    kwargs = call(tiny_model, tmp_path / "w", batch_size=4, max_steps=2)
    # Rank 0 as a stand-in (no process group here): it records 2 processes in the fingerprint.
    monkeypatch.setattr(distributed, "launched_world_size", lambda: 2)
    trained = train_transformer(**kwargs)
    monkeypatch.undo()

    def no_launch(*args, **kw):
        raise AssertionError("launched again")

    monkeypatch.setattr(distributed, "launch_training", no_launch)
    monkeypatch.setattr(distributed, "visible_gpus", lambda: 2)
    again = train_transformer(**kwargs)
    assert again.extra.get("loaded_from") and np.array_equal(again.test_probs, trained.test_probs)


@pytest.mark.slow
def test_ddp_run_killed_mid_epoch_resumes_exactly(tiny_model, tmp_path):
    whole = ddp(call(tiny_model, tmp_path / "whole", batch_size=4))
    killed = call(tiny_model, tmp_path / "cut", batch_size=4)
    with pytest.raises(KitError, match="exit status"):
        ddp({**killed, "callbacks": [KillJobAtStep(6)]})  # after checkpoint-4, mid-epoch
    saved = sorted(p.name for p in (tmp_path / "cut" / "checkpoints").glob("checkpoint-*"))
    assert saved == ["checkpoint-4"]
    assert {p.name for p in (tmp_path / "cut" / "checkpoints" / "checkpoint-4").glob(
        "rng_state*")} == {"rng_state_0.pth", "rng_state_1.pth"}  # one RNG state per rank
    resumed = ddp(killed)
    assert resumed.resumed_from_step == 4 and resumed.global_step == whole.global_step
    assert np.array_equal(resumed.val_probs, whole.val_probs)
    assert np.array_equal(resumed.test_probs, whole.test_probs)
    assert dataclasses.asdict(resumed)["best_step"] == whole.best_step


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    from helpers.tiny_recipes import build_tiny_model

    return build_tiny_model("smollm2-135m", tmp_path_factory.mktemp("llama") / "llama")


@pytest.mark.slow
@pytest.mark.parametrize("quantization", ["none", "4bit"])
def test_lora_trains_in_two_cpu_ranks_like_one_process(tiny_llama, tmp_path, quantization):
    from kit.config.params import LoraParams

    lora = LoraParams(enabled=True, r=4, alpha=8, dropout=0.0, quantization=quantization)
    over = dict(max_steps=6, eval_steps=3, save_steps=3, lr=1e-3, optimizer="adamw_torch",
                lora=lora)
    single = train_transformer(**call(tiny_llama, tmp_path / "single", batch_size=8, **over))
    both = ddp(call(tiny_llama, tmp_path / "ddp", batch_size=4, **over))
    assert both.global_step == single.global_step == 6
    assert (tmp_path / "ddp" / "checkpoints" / "checkpoint-6" / "rng_state_1.pth").is_file()
    tolerance = 1e-4 if quantization == "none" else 1e-3  # 4-bit matmuls: other rounding
    np.testing.assert_allclose(both.test_probs, single.test_probs, atol=tolerance)


def test_time_budget_stops_every_rank_when_any_rank_must_stop(monkeypatch):
    import torch.distributed as dist

    from kit.models.hf import budget

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_backend", lambda: "gloo")
    monkeypatch.setattr(dist, "all_reduce", lambda flag, op: flag.fill_(1))  # another rank: stop
    clock = iter([0.0, 1.0])
    monkeypatch.setattr(budget, "now", lambda: next(clock))
    timer = budget.TimeBudget(budget_seconds=3600.0, started=0.0)
    timer.on_train_begin(None, SimpleNamespace(global_step=0), None)
    control = SimpleNamespace(should_save=False, should_training_stop=False)
    timer.on_step_end(None, SimpleNamespace(global_step=1, max_steps=100), control)
    assert control.should_training_stop and control.should_save and timer.stopped_at == 1
