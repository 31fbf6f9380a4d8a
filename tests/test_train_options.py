"""The winners' training options on a tiny BERT: each changes training as its doc says, and a
run with them, killed in the middle of a checkpoint write and resumed, ends bit for bit where an
uninterrupted run ends."""

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
import torch.nn.functional as F  # noqa: N812
from safetensors.torch import load_file
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    TrainerCallback,
    TrainingArguments,
)

from kit.config.params import LoraParams, TransformerParams
from kit.errors import KitError
from kit.models.hf.adversarial import make_adversary
from kit.models.hf.checkpoints import complete_checkpoints
from kit.models.hf.ema import EMA_FILE
from kit.models.hf.heads import use_multi_sample_dropout
from kit.models.hf.llrd import layer_of
from kit.models.hf.options import TrainingOptions
from kit.models.hf.resume import RESULT_FILE
from kit.models.hf.train import train_transformer
from kit.models.hf.trainer import KitTrainer

# One torch thread: these runs are compared bitwise (fixtures `one_thread`, `tiny_model`:
# tests/conftest.py).
pytestmark = pytest.mark.usefixtures("one_thread")

NAMES = ["fruit", "vehicle", "colour"]




def classifier(folder: Path, **config) -> torch.nn.Module:
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(folder, num_labels=3, **config)


def batch(folder: Path, n: int = 6) -> dict[str, torch.Tensor]:
    texts, labels = rw.make_corpus(n, seed=3)
    enc = AutoTokenizer.from_pretrained(folder)(texts, padding=True, return_tensors="pt")
    return {**enc, "labels": torch.tensor(labels)}


def kit_trainer(model, tmp_path: Path, options: TrainingOptions, **args) -> KitTrainer:
    arguments = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none",
                                  learning_rate=1e-3, weight_decay=0.01, **args)
    trainer = KitTrainer(model=model, args=arguments, task="multiclass", class_weights=None,
                         label_smoothing=0.0, train_lengths=[1], keep_last=1, disk_budget_gb=1.0,
                         options=options)
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer's loop, called directly here
    return trainer


# -- layer-wise learning-rate decay -----------------------------------------------------------
def test_llrd_gives_each_layer_its_decayed_learning_rate(tiny_model, tmp_path):
    model = classifier(tiny_model)
    trainer = kit_trainer(model, tmp_path, TrainingOptions(llrd=0.5))
    optimizer = trainer.create_optimizer()
    lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups
             for p in g["params"]}
    names = dict(model.named_parameters())
    assert set(lr_of) == {id(p) for p in names.values()}  # every parameter, once
    # Two layers: head and top layer (1) at lr, layer 0 at lr·0.5, embeddings at lr·0.5².
    expected = {"head": 1e-3, 1: 1e-3, 0: 5e-4, "embeddings": 2.5e-4}
    for name, p in names.items():
        lr, decay = lr_of[id(p)]
        assert lr == pytest.approx(expected[layer_of(name)]), name
        no_decay = name.endswith("bias") or "LayerNorm" in name
        assert decay == (0.0 if no_decay else 0.01), name
    assert layer_of("bert.encoder.layer.0.attention.self.query.weight") == 0
    assert layer_of("bert.embeddings.word_embeddings.weight") == "embeddings"
    assert layer_of("classifier.weight") == layer_of("bert.pooler.dense.weight") == "head"
    assert layer_of("base_model.model.model.layers.11.self_attn.q_proj.lora_A.default.weight") == 11
    # The schedule scales every group alike: the ratios hold at every step.
    trainer.create_scheduler(num_training_steps=10)
    for _ in range(3):
        optimizer.step()
        trainer.lr_scheduler.step()
    rates = [g["lr"] for g in optimizer.param_groups]
    assert rates[0] > 0 and trainer.lr_scheduler.get_last_lr()[0] == rates[0]  # the head's
    assert sorted({round(r / rates[0], 9) for r in rates}) == [0.25, 0.5, 1.0]
    # Without llrd: Trainer's two groups at lr.
    plain = kit_trainer(classifier(tiny_model), tmp_path, TrainingOptions()).create_optimizer()
    assert [g["lr"] for g in plain.param_groups] == [1e-3, 1e-3]


# -- EMA of the weights -------------------------------------------------------------------------
class RecordWeights(TrainerCallback):
    """The trainable weights when training begins and after every optimizer step."""

    def __init__(self):
        self.steps: list[dict[str, torch.Tensor]] = []

    def _take(self, model):
        self.steps.append({n: p.detach().clone() for n, p in model.named_parameters()})

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._take(model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self._take(model)


def test_ema_weights_are_the_closed_form_average_and_are_what_predicts(tiny_model, tmp_path):
    decay = 0.8
    cfg = TransformerParams(model=str(tiny_model), max_length=48, epochs=2.0, batch_size=8,
                            lr=2e-2, eval_steps=100, save_steps=100, ema_decay=decay)
    record = RecordWeights()
    splits = rw.toy_task()
    result = train_transformer(*splits["train"], None, None, splits["test"][0], task="multiclass",
                               label_names=NAMES, cfg=cfg, seed=7, work_dir=tmp_path / "ema",
                               callbacks=[record])
    w = record.steps  # w[0]: the start, w[t]: after step t
    steps = len(w) - 1
    assert steps == result.global_step == 24
    exported = load_file(result.model_dir / "model.safetensors")
    # ema_T = d^T w_0 + (1 - d) sum_t d^(T - t) w_t
    for name, raw in w[-1].items():
        closed = decay**steps * w[0][name] + sum(
            (1 - decay) * decay ** (steps - t) * w[t][name] for t in range(1, steps + 1))
        torch.testing.assert_close(exported[name], closed, rtol=0, atol=1e-6)
        if name.endswith("weight") and "LayerNorm" not in name:
            assert (exported[name] - raw).abs().max() > 1e-4, name  # not the raw weights
    # The predictions are the averaged model's.
    model = AutoModelForSequenceClassification.from_pretrained(result.model_dir).eval()
    enc = AutoTokenizer.from_pretrained(result.model_dir)(splits["test"][0], padding=True,
                                                          return_tensors="pt")
    with torch.no_grad():
        probs = torch.softmax(model(**enc).logits, -1).numpy()
    np.testing.assert_allclose(result.test_probs, probs, rtol=0, atol=1e-5)
    # Killed after its last checkpoint, before the result was saved: the rerun loads the
    # checkpoint's average, not its raw weights.
    (tmp_path / "ema" / RESULT_FILE).unlink()
    again = train_transformer(*splits["train"], None, None, splits["test"][0], task="multiclass",
                              label_names=NAMES, cfg=cfg, seed=7, work_dir=tmp_path / "ema")
    assert again.resumed_from_step == 24
    np.testing.assert_allclose(again.test_probs, result.test_probs, rtol=0, atol=1e-6)


# -- FGM / AWP ----------------------------------------------------------------------------------
def adversarial_step(tiny_model, tmp_path, method: str | None):
    """One training step's loss, gradients and weights after it (dropout off: comparable)."""
    model = classifier(tiny_model, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    adversary = make_adversary(method, None, 0.0) if method else None
    trainer = kit_trainer(model, tmp_path, TrainingOptions(adversary=adversary))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loss = trainer.training_step(model, batch(tiny_model))
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    after = {n: p.detach().clone() for n, p in model.named_parameters()}
    return trainer, loss, grads, before, after


def reference_grads(tiny_model, method: str) -> dict[str, torch.Tensor]:
    """The gradient each method promises, computed by hand."""
    model = classifier(tiny_model, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model.train()
    inputs = batch(tiny_model)

    def loss():
        return F.cross_entropy(model(**{k: v for k, v in inputs.items() if k != "labels"}).logits,
                               inputs["labels"])

    loss().backward()
    clean = {n: p.grad.clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        for name, p in model.named_parameters():
            hit = ("word_embeddings" in name) if method == "fgm" else ("weight" in name)
            if not hit:
                continue
            g = p.grad / torch.linalg.vector_norm(p.grad)
            if method == "fgm":
                p.add_(g)  # eps 1.0
            else:  # awp, eps 0.01: ‖W‖ along g, clipped to W ± 0.01|W|
                p.copy_(torch.clamp(p + torch.linalg.vector_norm(p) * g, p - 0.01 * p.abs(),
                                    p + 0.01 * p.abs()))
    model.zero_grad()
    loss().backward()
    perturbed = {n: p.grad.clone() for n, p in model.named_parameters()}
    if method == "fgm":
        return {n: clean[n] + perturbed[n] for n in clean}
    return perturbed


@pytest.mark.parametrize("method", ["fgm", "awp"])
def test_adversarial_step_changes_the_gradient_and_restores_the_weights(tiny_model, tmp_path,
                                                                        method):
    _, clean_loss, clean_grads, _, _ = adversarial_step(tiny_model, tmp_path / "c", None)
    trainer, loss, grads, before, after = adversarial_step(tiny_model, tmp_path / "a", method)
    for name in before:  # every weight, the embeddings included, back bit for bit
        assert torch.equal(after[name], before[name]), name
    assert torch.equal(loss, clean_loss)  # the reported loss is the clean one
    emb = "bert.embeddings.word_embeddings.weight"
    assert not torch.allclose(grads[emb], clean_grads[emb])
    expected = reference_grads(tiny_model, method)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected[name], rtol=1e-4, atol=1e-6)
    # The perturbed pass's loss is logged beside the clean one, and it is higher.
    logs: dict[str, float] = {"loss": float(clean_loss)}
    trainer.log(logs)
    assert logs["adversarial_loss"] > logs["loss"]


def test_fgm_changes_the_training_curve_and_starts_at_its_epoch(tiny_model, tmp_path):
    def run(name: str, **over):
        cfg = TransformerParams(model=str(tiny_model), max_length=48, epochs=2.0, batch_size=8,
                                lr=2e-2, eval_steps=4, save_steps=100 * 4, **over)
        splits = rw.toy_task()
        result = train_transformer(*splits["train"], None, None, None, task="multiclass",
                                   label_names=NAMES, cfg=cfg, seed=7, work_dir=tmp_path / name)
        return [(h["step"], h["loss"], h.get("adversarial_loss"))
                for h in result.history if "loss" in h]

    plain = run("plain")
    fgm = run("fgm", adversarial="fgm", adversarial_start_epoch=1.0)
    # Epoch 1 (steps 1-12) trains clean: the same curve; from epoch 2 on FGM changes it.
    assert [s for s, _, adv in fgm if adv is not None] == [13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
                                                            23, 24]
    assert [loss for s, loss, _ in fgm if s <= 12] == [loss for s, loss, _ in plain if s <= 12]
    assert all(abs(a[1] - b[1]) > 1e-6 for a, b in zip(fgm[13:], plain[13:], strict=True))


# -- multi-sample dropout -----------------------------------------------------------------------
def test_multi_sample_dropout_averages_masks_in_training_only(tiny_model):
    plain, msd = classifier(tiny_model), classifier(tiny_model)
    assert use_multi_sample_dropout(msd, 5) == "classifier"
    assert msd.state_dict().keys() == plain.state_dict().keys()  # saved and exported as before
    inputs = {k: v for k, v in batch(tiny_model).items() if k != "labels"}
    plain.eval()
    msd.eval()
    with torch.no_grad():
        assert torch.equal(msd(**inputs).logits, plain(**inputs).logits)  # eval: the plain head
        plain.train()
        msd.train()
        torch.manual_seed(1)
        single = plain(**inputs).logits
        torch.manual_seed(1)
        averaged = msd(**inputs).logits
        assert not torch.allclose(averaged, single, atol=1e-4)
        # By hand: the backbone once, then the head on 5 dropout masks of the pooled output.
        torch.manual_seed(1)
        pooled = plain.bert(**inputs).pooler_output
        p = plain.config.hidden_dropout_prob
        by_hand = torch.stack([plain.classifier(F.dropout(pooled, p, training=True))
                               for _ in range(5)]).mean(0)
    torch.testing.assert_close(averaged, by_hand, rtol=0, atol=1e-6)


# -- params rules -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"head_tokens": 8}, r"head_tokens \(8\) only applies to truncation_side: head_tail"),
        ({"truncation_side": "head_tail", "head_tokens": 64, "max_length": 64},
         r"head_tokens \(64\) must be below max_length \(64\)"),
        ({"adversarial_eps": 0.5}, r"adversarial_eps \(0.5\) is set but adversarial is none"),
        ({"adversarial": "awp", "epochs": 1.0}, r"adversarial_start_epoch \(1\) is not below"),
        ({"adversarial": "fgm", "adversarial_start_epoch": 0.0,
          "lora": LoraParams(enabled=True)}, r"fgm perturbs the word embeddings.*LoRA"),
        ({"multi_sample_dropout": 4, "lora": LoraParams(enabled=True)},
         r"multi_sample_dropout applies to fully fine-tuned heads"),
        ({"llrd": 1.5}, r"transformer.llrd is 1.5; use a value in \(0, 1\]"),
        ({"ema_decay": 1.0}, r"transformer.ema_decay is 1.0; use a value in \(0, 1\)"),
    ],
)
def test_option_rules_name_key_value_and_fix(over, match):
    with pytest.raises(KitError, match=match):
        TransformerParams(**over)


# -- exact resume with every option -------------------------------------------------------------
WORKER = Path(rw.__file__)


def run_worker(spec: dict, tmp: Path, name: str) -> int:
    spec = {**spec, "out": str(tmp / name)}
    path = tmp / f"{name}.spec.json"
    path.write_text(json.dumps(spec))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(tmp / f"{name}.log", "w") as log:
        return subprocess.run([sys.executable, str(WORKER), str(path)], stdout=log,
                              stderr=subprocess.STDOUT, env=env, timeout=300).returncode


@pytest.mark.slow
def test_killed_run_with_every_option_resumes_bitwise(tiny_model, tmp_path):
    cfg = {"model": str(tiny_model), "max_length": 48, "epochs": 3.0, "batch_size": 4,
           "grad_accum": 2, "eval_batch_size": 16, "lr": 2e-2, "eval_steps": 6, "save_steps": 6,
           "warmup_ratio": 0.1, "save_total_limit": 1, "ema_decay": 0.9, "llrd": 0.8,
           "adversarial": "awp", "adversarial_start_epoch": 0.5, "multi_sample_dropout": 3,
           "truncation_side": "head_tail"}
    ref_spec = {"cfg": cfg, "work_dir": str(tmp_path / "ref")}
    assert run_worker(ref_spec, tmp_path, "ref") == 0, (tmp_path / "ref.log").read_text()[-3000:]
    # Killed while writing the step-18 checkpoint (weights written, RNG state and EMA not yet):
    # the rerun resumes at 12, retrains 13-18 with the EMA of step 12, and goes on to 36.
    spec = {"cfg": cfg, "work_dir": str(tmp_path / "run")}
    assert run_worker({**spec, "kill_in_save_at_step": 18}, tmp_path, "a") == -signal.SIGKILL
    ckpts = tmp_path / "run" / "checkpoints"
    assert complete_checkpoints(ckpts)[-1].name == "checkpoint-12"
    assert (complete_checkpoints(ckpts)[-1] / EMA_FILE).is_file()
    assert not (ckpts / ".staging" / "checkpoint-18" / EMA_FILE).exists()
    assert run_worker(spec, tmp_path, "b") == 0, (tmp_path / "b.log").read_text()[-3000:]
    assert "resumed from step 12 of 36" in (tmp_path / "b.log").read_text()

    ref, run = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("ref", "b"))
    assert run["global_step"] == ref["global_step"] == 36 and run["resumed_from_step"] == 12
    assert run["best_step"] == ref["best_step"]
    evals = [[(h["step"], h["eval_loss"], h["eval_f1_macro"]) for h in r["history"]
              if "eval_loss" in h] for r in (ref, run)]
    assert evals[0] == evals[1] and len(evals[0]) == 6  # EMA scores, bit for bit
    with np.load(tmp_path / "ref.npz") as a, np.load(tmp_path / "b.npz") as b:
        assert np.array_equal(a["val_probs"], b["val_probs"])
        assert np.array_equal(a["test_probs"], b["test_probs"])
    last = "checkpoints/checkpoint-36"
    for file in ("model.safetensors", EMA_FILE):
        mine, theirs = (load_file(tmp_path / d / last / file) for d in ("run", "ref"))
        assert mine.keys() == theirs.keys()
        assert all(torch.equal(mine[k], theirs[k]) for k in mine), file
    # The export holds the averaged weights of the best checkpoint, the same in both.
    mine, theirs = (load_file(tmp_path / d / "model" / "model.safetensors") for d in ("run", "ref"))
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)
