"""Fold-LoRA merge: k fold adapters of a tiny Llama become one model (kit.models.fold_merge)."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_llm import LABEL_NAMES, LABELS, TEXTS, load, make_checkpoint, train_steps

from kit.config.params import Params, TransformerParams
from kit.errors import KitError
from kit.models.export import EXPORT_INFO, export_for_kaggle, load_exported
from kit.models.fold_merge import (
    fold_exports,
    merge_fold_adapters,
    merge_report,
    merge_run_folds,
    merged_export_dir,
)

K = 3
EXPORT_PARAMS = {"transformer": {"model": "tiny-llama", "lora": {"r": 4}}, "task": "multiclass",
                 "max_length": 32, "head_tokens": None, "predict_views": None}
# The toy texts and every pair of them joined: the rows the fold models are compared on.
EVAL_TEXTS = TEXTS + [f"{a} {b}" for a in TEXTS for b in TEXTS if a != b]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A run folder holding K fold exports: each fold a LoRA adapter (r 4) trained without
    one of the toy texts, from its own seed (as the kit seeds folds: each fold's LoRA and head
    start elsewhere, so their deltas and heads differ)."""
    root = tmp_path_factory.mktemp("merge")
    base = make_checkpoint(root / "llama", "llama")
    folder = root / "run"
    for k in range(K):
        model, tok = load(base, seed=k, dropout=0.0, r=4)
        keep = [i for i in range(len(TEXTS)) if i != k]
        train_steps(model, tok, steps=20, lr=3e-3, texts=[TEXTS[i] for i in keep],
                    labels=[LABELS[i] for i in keep])
        export_for_kaggle(model, tok, folder / "models" / "transformer" / f"r0_f{k}" / "model",
                          LABEL_NAMES, EXPORT_PARAMS)
    return folder


def _lora_layers(model) -> dict[str, torch.nn.Module]:
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


def _probs(model, tok, texts=EVAL_TEXTS) -> np.ndarray:
    with torch.no_grad():
        logits = model(**tok(texts, padding=True, return_tensors="pt")).logits
    return torch.softmax(logits.float(), -1).numpy()


def test_merged_delta_is_the_mean_of_the_fold_deltas_and_the_head_their_mean(run, capsys):
    out = merge_run_folds(run)
    info = json.loads((out / EXPORT_INFO).read_text())
    assert info["kind"] == "adapter" and out == merged_export_dir(run)
    assert info["merged_folds"]["folds"] == ["r0_f0", "r0_f1", "r0_f2"]
    assert info["merged_folds"]["rank"] == K * 4
    merged, _, _ = load_exported(out, device="cpu")
    folds = [load_exported(e, device="cpu")[0] for e in fold_exports(run)]
    layers = _lora_layers(merged)
    assert len(layers) >= 8  # every attention and MLP projection of both blocks
    worst = 0.0
    for name, layer in layers.items():
        mean = torch.stack([_lora_layers(f)[name].get_delta_weight("default")
                            for f in folds]).mean(0)
        delta = layer.get_delta_weight("default")
        assert mean.abs().max() > 1e-4  # trained deltas, not zeros
        worst = max(worst, float((delta - mean).abs().max()))
    assert worst < 1e-5
    head = merged.base_model.model.score.modules_to_save["default"].weight
    fold_heads = [f.base_model.model.score.modules_to_save["default"].weight for f in folds]
    torch.testing.assert_close(head, torch.stack(fold_heads).mean(0), atol=1e-7, rtol=0)
    assert not torch.allclose(fold_heads[0], fold_heads[1])
    with capsys.disabled():
        print(f"\nmerged delta vs mean of {K} fold deltas: max abs difference {worst:.2e} "
              f"over {len(layers)} LoRA layers")


def test_merged_predictions_against_the_mean_of_the_fold_models(run, capsys):
    from transformers import AutoTokenizer

    out = merged_export_dir(run) if merged_export_dir(run).exists() else merge_run_folds(run)
    tok = AutoTokenizer.from_pretrained(out)
    merged = load_exported(out, device="cpu")[0]
    folds = [load_exported(e, device="cpu")[0] for e in fold_exports(run)]
    fold_probs = [_probs(f, tok) for f in folds]
    mean = np.mean(fold_probs, axis=0)
    report = merge_report(_probs(merged, tok), mean, "multiclass")
    singles = [merge_report(p, mean, "multiclass") for p in fold_probs]
    with capsys.disabled():
        print(f"\nmerged vs mean of {K} fold models on {report['rows']} texts: max abs "
              f"difference {report['max_abs_diff']:.4f}, agreement {report['agreement']:.3f} "
              "(each fold vs the mean: " + ", ".join(
                  f"{s['max_abs_diff']:.4f} / {s['agreement']:.3f}" for s in singles) + ")")
    assert report["rows"] == len(EVAL_TEXTS)
    # Closer to the fold mean than any one fold is: the reason to merge rather than pick one.
    # (A random tiny base has no features the folds share, so they differ far more than folds
    # fine-tuned from one pretrained model do: this is the hard case.)
    assert report["max_abs_diff"] < min(s["max_abs_diff"] for s in singles)
    assert report["agreement"] >= 0.75


@pytest.mark.slow
def test_the_merged_model_predicts_in_one_pass_where_folds_take_k(run, capsys):
    from kit.serve.models import load_model

    out = merged_export_dir(run) if merged_export_dir(run).exists() else merge_run_folds(run)
    params = Params(models=["transformer"], transformer=TransformerParams(eval_batch_size=16))
    texts = EVAL_TEXTS * 2

    def timed(model) -> tuple[float, np.ndarray]:  # best of 3, after a warm-up call
        model.predict(texts[:16])
        seconds = []
        for _ in range(3):
            started = time.perf_counter()
            probs = model.predict(texts)
            seconds.append(time.perf_counter() - started)
        return min(seconds), probs

    # prefers models/transformer/merged
    merged_seconds, merged = timed(load_model(run, params, "transformer", "cpu"))
    hidden = out.parent.with_name("hidden")  # the k fold models, as served without it
    out.parent.rename(hidden)
    try:
        folds_seconds, mean = timed(load_model(run, params, "transformer", "cpu"))
    finally:
        hidden.rename(out.parent)
    report = merge_report(merged, mean, "multiclass")
    with capsys.disabled():
        print(f"\nserving {len(texts)} texts: merged {merged_seconds:.3f} s, {K} folds "
              f"{folds_seconds:.3f} s ({folds_seconds / merged_seconds:.1f}x); max abs "
              f"difference {report['max_abs_diff']:.4f}, agreement {report['agreement']:.3f}")
    assert report["max_abs_diff"] < 0.5
    assert merged_seconds < folds_seconds


def test_exports_that_cannot_merge_exactly_are_refused(run, tmp_path):
    from peft import LoraConfig

    exports = fold_exports(run)
    with pytest.raises(KitError, match="merging needs the k >= 2 folds"):
        fold_exports(tmp_path)
    odd = tmp_path / "rs"
    import shutil

    shutil.copytree(exports[1], odd)
    config = LoraConfig.from_pretrained(str(odd))
    dataclasses.replace(config, use_rslora=True).save_pretrained(str(odd))
    with pytest.raises(KitError, match="use_rslora"):
        merge_fold_adapters([exports[0], odd], tmp_path / "out")
    info = json.loads((odd / EXPORT_INFO).read_text())
    (odd / EXPORT_INFO).write_text(json.dumps({**info, "kind": "merged"}))
    with pytest.raises(KitError, match="merge_on_export"):
        merge_fold_adapters([exports[0], odd], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_kit_export_merge_folds_writes_weights_that_package_alone(run, tmp_path, capsys):
    from transformers import AutoTokenizer

    from kit.cli import main
    from kit.kaggle.package import model_parts

    (run / "params.yaml").write_text(yaml.safe_dump({"name": "run"}))
    assert main(["export", str(run), "--merge-folds", "--merge-weights"]) == 0
    out = merged_export_dir(run)
    assert "merged 3 fold adapters" in capsys.readouterr().out
    info = json.loads((out / EXPORT_INFO).read_text())
    assert info["kind"] == "merged" and info["merged_folds"]["rank"] == K * 4
    assert model_parts(run) == ["models/transformer/merged/model"]
    weights, tok, _ = load_exported(out, device="cpu")
    assert main(["export", str(run), "--merge-folds"]) == 0  # back to the adapter
    adapter, _, _ = load_exported(out, device="cpu")
    tok = AutoTokenizer.from_pretrained(out)
    np.testing.assert_allclose(_probs(weights, tok), _probs(adapter, tok), atol=2e-2)


class StoppedError(Exception):
    """Where the test stops a run: inside the merge, after every fold finished."""


@pytest.mark.slow
def test_02_merges_the_folds_and_a_run_stopped_before_the_merge_resumes_there(
        project, tmp_path, monkeypatch, capsys, one_thread):
    """transformer.merge_folds: 02 ends with the merged model and its comparison; a run stopped
    inside the merge (every fold finished) merges on the rerun, training nothing again."""
    import kit.models.fold_merge as fold_merge
    from kit.core.rundir import open_run
    from kit.data.competition import load_competition
    from kit.serve.predictor import Predictor
    from kit.steps.decide import fit_decision_rule
    from kit.steps.train import train_models
    from tests.helpers.tiny_recipes import build_tiny_model

    llama = build_tiny_model("smollm2-135m", tmp_path / "llama")
    overrides = {"models": ["transformer"], "cv.folds": 2, "tracking.enabled": False,
                 "transformer": {"model": str(llama), "max_length": 24, "max_steps": 6,
                                 "eval_steps": 3, "save_steps": 3, "batch_size": 8, "lr": 5e-3,
                                 "merge_folds": True, "predict_views": ["right", "head_tail"],
                                 "lora": {"enabled": True, "r": 4}}}
    run = open_run("params/topics.yaml", "merged", overrides)
    comp = load_competition(run.params, project)
    real, calls = fold_merge.merge_run_folds, []

    def stopped(*args, **kwargs):
        calls.append("merge")
        raise StoppedError  # as a kill here: every fold saved, no merge, no predictions

    monkeypatch.setattr(fold_merge, "merge_run_folds", stopped)
    with pytest.raises(StoppedError):
        train_models(run, comp)
    assert not (run.path / "predictions" / "transformer.npz").exists()
    monkeypatch.setattr(fold_merge, "merge_run_folds", real)
    fitted = []
    monkeypatch.setattr("kit.steps.train.fit_model", lambda *a, **k: fitted.append(a) or 1 / 0)
    train_models(run, comp)  # the folds' saved fits are reused (fit_model would fail)
    assert fitted == [] and calls == ["merge"]

    out = merged_export_dir(run.path)
    info = json.loads((out / EXPORT_INFO).read_text())
    assert info["merged_folds"]["folds"] == ["r0_f0", "r0_f1"]
    assert info["predict_views"]["views"] == ["right", "head_tail"]  # the folds' views, kept
    report = run.read_metrics()["models"]["transformer"]["merged_folds"]
    assert report["rows"] == len(comp.test) and 0 < report["max_abs_diff"] < 1
    saved = run.load_predictions("transformer").test_probs  # the two folds' mean
    fit_decision_rule(run, comp)
    predictor = Predictor.load(run.path, device="cpu")  # the merged model, in one pass
    merged = predictor.raw_probs(predictor.render(comp.test, "test.csv"))
    assert np.abs(merged - saved).max() == pytest.approx(report["max_abs_diff"], abs=1e-6)
    with capsys.disabled():
        print(f"\n02 merge_folds (2 folds, tiny Llama, {report['rows']} test rows): max abs "
              f"difference {report['max_abs_diff']:.4f}, agreement {report['agreement']:.3f}")
