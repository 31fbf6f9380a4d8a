"""Checkpoints on a tiny BERT: a disk that fills during a save, checkpoints damaged after they
were saved, and a finished model's (or fold's) checkpoints deleted once its export is kept."""

from __future__ import annotations

import errno
import json
import re
from pathlib import Path

import numpy as np
import pytest
import resume_worker as rw
import torch
from conftest import write_params
from transformers import TrainerCallback

from kit.config.params import TransformerParams
from kit.errors import KitError
from kit.models.hf import checkpoints
from kit.models.hf.checkpoints import (
    COMPLETE_MARKER,
    checkpoint_problem,
    complete_checkpoints,
    describe_files,
    is_disk_full,
    release_checkpoints,
)
from kit.models.hf.train import train_transformer

pytestmark = pytest.mark.usefixtures("one_thread")  # runs compared bitwise (tests/conftest.py)

NAMES = ["fruit", "vehicle", "colour"]
STEPS, SAVE = 24, 6  # 96 rows / batch 8 = 12 steps an epoch, 2 epochs; a checkpoint every 6


def make_cfg(model: Path, **over) -> TransformerParams:
    base = dict(model=str(model), max_length=48, epochs=2.0, batch_size=8, grad_accum=1,
                eval_batch_size=16, lr=2e-2, eval_steps=SAVE, save_steps=SAVE, warmup_ratio=0.1,
                save_total_limit=2, class_weights="sqrt", checkpoint_fsync=False)
    return TransformerParams(**{**base, **over})


def train(cfg: TransformerParams, work_dir: Path, callbacks=None):
    splits = rw.toy_task()
    (tx, ty), (vx, vy), (sx, _) = splits["train"], splits["val"], splits["test"]
    return train_transformer(tx, ty, vx, vy, sx, task="multiclass", label_names=NAMES, cfg=cfg,
                             seed=7, work_dir=work_dir, callbacks=callbacks)


@pytest.fixture(scope="module")
def reference(tiny_model, tmp_path_factory):
    """The uninterrupted run every interrupted one must end equal to."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ref = train(make_cfg(tiny_model), tmp_path_factory.mktemp("ref"))
    finally:
        torch.set_num_threads(threads)
    assert ref.completed and ref.global_step == STEPS
    return ref


def assert_same_result(result, ref) -> None:
    assert result.completed and result.global_step == ref.global_step
    np.testing.assert_array_equal(result.val_probs, ref.val_probs)
    np.testing.assert_array_equal(result.test_probs, ref.test_probs)


class StoppedError(Exception):
    """Raised by StopAt."""


class StopAt(TrainerCallback):
    """Ends the process's training at a step, as a kill would (after the checkpoints before it)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise StoppedError(f"stopped at step {self.step}")


# -- a full disk ------------------------------------------------------------------------------
def test_a_full_disk_during_a_save_stops_clearly_keeps_the_previous_and_the_rerun_resumes(
        tiny_model, tmp_path, reference, monkeypatch, capsys):
    """ENOSPC while Trainer writes optimizer.pt of checkpoint-12 (model.safetensors already
    written into the staging folder): a KitError saying where, how much is free and what to
    do; checkpoint-6 untouched; no half checkpoint left; the rerun resumes from 6 and ends equal
    to the uninterrupted run."""
    ckpts = tmp_path / "run" / "checkpoints"
    real_save = torch.save
    before = {}

    def full_disk(obj, f, *args, **kwargs):
        if str(f).endswith("optimizer.pt") and "checkpoint-12" in str(f):
            assert (Path(f).parent / "model.safetensors").is_file()  # mid-save, not before it
            before.update(describe_files(ckpts / "checkpoint-6"))
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(KitError) as caught:
        train(make_cfg(tiny_model), tmp_path / "run")
    message = str(caught.value)
    assert "The disk is full: saving checkpoint-12 into " + str(ckpts) in message
    assert re.search(r"failed \(\d+\.\d+ [MG]B free there now", message)
    assert f"The previous checkpoint ({ckpts / 'checkpoint-6'}) is intact" in message
    for fix in ("free space", "transformer.save_total_limit", "transformer.checkpoint_dir"):
        assert fix in message
    assert before, "the injected ENOSPC never fired"
    assert not (ckpts / ".staging").exists() and not (ckpts / "checkpoint-12").exists()
    assert [p.name for p in complete_checkpoints(ckpts)] == ["checkpoint-6"]
    assert describe_files(ckpts / "checkpoint-6") == before  # byte for byte (sizes and hashes)

    monkeypatch.undo()
    capsys.readouterr()
    resumed = train(make_cfg(tiny_model), tmp_path / "run")
    assert f"resumed from step 6 of {STEPS}" in capsys.readouterr().out
    assert resumed.resumed_from_step == 6
    assert_same_result(resumed, reference)


def test_torchs_and_safetensors_disk_full_errors_are_recognised(tmp_path, monkeypatch):
    # The forms seen on a full 1 MB tmpfs (kit/models/hf/checkpoints.py, DISK_FULL_TEXTS).
    safetensors_error = type("SafetensorError", (Exception,), {})(
        "Error while serializing: I/O error: No space left on device (os error 28)")
    assert is_disk_full(safetensors_error, tmp_path)
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"), tmp_path)
    # torch.save names no errno; the error's context says only "iostream error".
    torch_error = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576")
    torch_error.__context__ = RuntimeError("basic_ios::clear: iostream error")
    assert not is_disk_full(torch_error, tmp_path)  # this disk has room: another failure
    monkeypatch.setattr(checkpoints, "free_bytes", lambda folder: 1024)
    assert is_disk_full(torch_error, tmp_path)  # no room left: the disk filled
    assert not is_disk_full(ValueError("a bug"), tmp_path)


# -- damaged checkpoints ----------------------------------------------------------------------
def stopped_run(model: Path, work: Path) -> Path:
    """A run stopped at step 13: complete checkpoints 6 and 12."""
    with pytest.raises(StoppedError):
        train(make_cfg(model), work, callbacks=[StopAt(13)])
    ckpts = work / "checkpoints"
    assert [p.name for p in complete_checkpoints(ckpts)] == ["checkpoint-6", "checkpoint-12"]
    return ckpts


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("damaged", ["model.safetensors", "optimizer.pt"])
def test_a_damaged_latest_checkpoint_is_detected_and_the_previous_one_used(
        tiny_model, tmp_path, reference, capsys, damaged):
    ckpts = stopped_run(tiny_model, tmp_path / "run")
    truncate(ckpts / "checkpoint-12" / damaged)
    capsys.readouterr()
    resumed = train(make_cfg(tiny_model), tmp_path / "run")
    out = capsys.readouterr().out
    assert f"Checkpoint {ckpts / 'checkpoint-12'} is damaged: {damaged} is" in out
    assert "when it was saved" in out
    assert f"resumed from step 6 of {STEPS}" in out and resumed.resumed_from_step == 6
    assert_same_result(resumed, reference)


def test_no_usable_checkpoint_starts_over_with_a_clear_message(tiny_model, tmp_path, reference,
                                                               capsys):
    ckpts = stopped_run(tiny_model, tmp_path / "run")
    truncate(ckpts / "checkpoint-12" / "model.safetensors")
    truncate(ckpts / "checkpoint-6" / "optimizer.pt")
    capsys.readouterr()
    again = train(make_cfg(tiny_model), tmp_path / "run")
    out = capsys.readouterr().out
    assert (f"No usable checkpoint in {ckpts} (checkpoint-6, checkpoint-12 damaged): training "
            "starts over from step 0") in out
    assert "resumed from step" not in out and again.resumed_from_step is None
    assert_same_result(again, reference)


def test_damage_is_found_by_size_hash_and_structure(tmp_path):
    from safetensors.torch import save_file

    folder = tmp_path / "checkpoint-4"
    folder.mkdir()
    save_file({"w": torch.arange(1000.0)}, folder / "model.safetensors")
    torch.save({"state": torch.ones(500)}, folder / "optimizer.pt")
    (folder / "trainer_state.json").write_text('{"global_step": 4}')
    checkpoints.write_marker(folder, 4, 8)
    assert checkpoint_problem(folder) is None
    marker = json.loads((folder / COMPLETE_MARKER).read_text())
    assert marker["files"]["model.safetensors"]["bytes"] == (folder / "model.safetensors").stat(
    ).st_size
    assert "sha256" in marker["files"]["trainer_state.json"]

    (folder / "trainer_state.json").write_text('{"global_step": 5}')  # same size, other bytes
    assert checkpoint_problem(folder) == (
        "trainer_state.json changed since it was saved (its sha256 differs)")
    (folder / "trainer_state.json").write_text('{"global_step": 4}')
    (folder / "optimizer.pt").unlink()
    assert checkpoint_problem(folder) == "optimizer.pt is missing"

    # A marker written before files were recorded: the files' structure is still checked.
    (folder / COMPLETE_MARKER).write_text("{}")
    assert checkpoint_problem(folder) is None
    truncate(folder / "model.safetensors")
    assert "model.safetensors is" in checkpoint_problem(folder)
    save_file({"w": torch.arange(1000.0)}, folder / "model.safetensors")
    torch.save({"state": torch.ones(500)}, folder / "optimizer.pt")
    truncate(folder / "optimizer.pt")
    assert "optimizer.pt is not a whole torch archive" in checkpoint_problem(folder)
    (folder / COMPLETE_MARKER).write_text('{"step": 4')  # the marker itself cut short
    assert checkpoint_problem(folder) == f"{COMPLETE_MARKER} is unreadable"


# -- finished models and folds release their checkpoints --------------------------------------
def test_release_deletes_only_what_the_kit_wrote(tmp_path):
    root = tmp_path / "drive_folder"
    for name in ("checkpoint-4", "checkpoint-8", ".staging/checkpoint-12"):
        (root / name).mkdir(parents=True)
        (root / name / "model.safetensors").write_bytes(b"x" * 100)
    (root / "kit_fingerprint.json").write_text("{}")
    (root / "notes.txt").write_text("the user's own file")
    (root / "checkpoint-old-notes").mkdir()
    assert release_checkpoints(root, keep=True) == 0 and (root / "checkpoint-4").is_dir()
    assert release_checkpoints(root) == 300 + 2
    assert sorted(p.name for p in root.iterdir()) == ["checkpoint-old-notes", "notes.txt"]
    (root / "notes.txt").unlink()
    (root / "checkpoint-old-notes").rmdir()
    (root / "checkpoint-4").mkdir()
    release_checkpoints(root)
    assert not root.exists()  # emptied by the release: removed too
    assert release_checkpoints(root) == 0 and release_checkpoints(None) == 0


class CheckpointCensus(TrainerCallback):
    """At every save: which fold folders hold checkpoints, under the given roots."""

    def __init__(self, *roots: Path):
        self.roots = roots
        self.seen: list[set[str]] = []

    def on_save(self, args, state, control, **kwargs):
        self.seen.append({p.parent.name for root in self.roots
                          for p in root.rglob("checkpoint-*") if p.is_dir()})


def test_kfold_holds_one_folds_checkpoints_at_a_time_and_none_when_finished(
        project, tiny_model, tmp_path):
    """Checkpoints go to the persistent folder (platform.checkpoint_dir, e.g. Drive); each
    fold's are deleted when the fold ends, the exports stay; keep_checkpoints keeps them."""
    from kit.core.rundir import open_run
    from kit.data.competition import load_competition
    from kit.steps.train import train_models

    persistent = tmp_path / "drive"
    write_params(project / "params" / "folds.yaml", {
        "extends": "topics.yaml", "name": "folds", "models": ["transformer"],
        "cv": {"folds": 3}, "tracking": {"enabled": False},
        "platform": {"checkpoint_dir": str(persistent)},
        "transformer": {"model": str(tiny_model), "max_length": 32, "epochs": 2.0,
                        "batch_size": 8, "eval_steps": 4, "save_steps": 4, "lr": 2e-2,
                        "checkpoint_fsync": False}})
    run = open_run("params/folds.yaml")
    census = CheckpointCensus(persistent, run.path)
    train_models(run, load_competition(run.params, run.root), callbacks=[census])
    folds = ["r0_f0", "r0_f1", "r0_f2"]
    # Each save sees the checkpoints of the fold in training only, in the persistent folder.
    assert len(census.seen) >= 6
    assert all(len(seen) == 1 for seen in census.seen), census.seen
    assert [f for f in folds if {f} in census.seen] == folds
    assert not list(persistent.rglob("checkpoint-*")) and not list(run.path.rglob("checkpoint-*"))
    assert not (persistent / "folds" / "transformer" / "r0_f0").exists()
    for fold in folds:
        model = run.models / "transformer" / fold / "model"
        assert (model / "model.safetensors").is_file()
    assert (run.predictions / "transformer.npz").is_file()

    # The same run with keep_checkpoints: every fold keeps its checkpoints.
    write_params(project / "params" / "keep.yaml", {
        "extends": "folds.yaml", "name": "keep", "transformer": {"keep_checkpoints": True}})
    kept = open_run("params/keep.yaml")
    train_models(kept, load_competition(kept.params, kept.root))
    for fold in folds:
        assert complete_checkpoints(persistent / "keep" / "transformer" / fold)


def test_released_run_predicts_new_test_texts_with_its_export(tiny_model, tmp_path, monkeypatch,
                                                              capsys):
    """A finished run whose checkpoints were released, called again with other test texts:
    the export predicts them (no retraining), and the new predictions are saved."""
    from transformers import Trainer

    cfg = make_cfg(tiny_model, epochs=1.0)
    done = train(cfg, tmp_path / "run")
    assert release_checkpoints(done.checkpoint_dir) > 0 and not done.checkpoint_dir.exists()
    monkeypatch.setattr(Trainer, "train", lambda *a, **k: pytest.fail("retrained"))
    flipped = rw.toy_task()["test"][0][::-1]
    splits = rw.toy_task()
    (tx, ty), (vx, vy) = splits["train"], splits["val"]
    again = train_transformer(tx, ty, vx, vy, flipped, task="multiclass", label_names=NAMES,
                              cfg=cfg, seed=7, work_dir=tmp_path / "run")
    assert "test texts differ" in capsys.readouterr().out
    np.testing.assert_array_equal(again.val_probs, done.val_probs)
    np.testing.assert_allclose(again.test_probs, done.test_probs[::-1], rtol=0, atol=1e-5)
    assert again.global_step == done.global_step and again.model_dir == done.model_dir
    third = train_transformer(tx, ty, vx, vy, flipped, task="multiclass", label_names=NAMES,
                              cfg=cfg, seed=7, work_dir=tmp_path / "run")
    assert "already trained" in capsys.readouterr().out  # saved: the same texts load again
    np.testing.assert_array_equal(third.test_probs, again.test_probs)
