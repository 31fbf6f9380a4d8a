"""ONNX export and runtime: `kit export --onnx --int8`, the same probabilities as PyTorch, and
the backend `kit predict`, `kit serve` and 05_infer pick."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kit.cli import main
from kit.errors import KitError
from kit.models.export import EXPORT_INFO
from kit.models.onnx_export import (
    ONNX_FILE,
    ONNX_INT8_FILE,
    choose_backend,
    export_onnx,
    run_exports,
)
from kit.serve.predictor import Predictor
from tests.serve_helpers import BuiltRun, build_run, request, start_server

pytest.importorskip("onnxruntime", reason="the onnx extra: pip install 'compkit[onnx]'")

LONG = " ".join(["the team won the match with a late goal"] * 6)  # cut by max_length 16


# One torch thread (and so one ONNX Runtime thread) for the module, its trained fixtures
# included (tests/conftest.py): the 2 cores are shared.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> BuiltRun:
    """The tiny BERT trained on `topics` (cut at 16 tokens), then `kit export --onnx --int8`."""
    import resume_worker as rw

    tiny = rw.build_tiny_model(tmp_path_factory.mktemp("tiny") / "bert")
    quick = {"model": str(tiny), "max_length": 16, "max_steps": 24, "eval_steps": 8,
             "save_steps": 8, "batch_size": 8, "eval_batch_size": 16, "lr": 5e-3}
    run = build_run(tmp_path_factory.mktemp("onnx-bert"), models=["transformer"],
                    transformer=quick)
    assert main(["export", str(run.path), "--onnx", "--int8"]) == 0
    return run


def texts_of(run: BuiltRun) -> list[str]:
    return [*run.test_texts, LONG, "", "goal"]


def test_export_writes_and_records_fp32_and_int8(exported: BuiltRun, capsys):
    export = exported.path / "models" / "transformer" / "model"
    assert run_exports(exported.path) == [export]
    onnx = json.loads((export / EXPORT_INFO).read_text())["onnx"]
    assert onnx["fp32"] == ONNX_FILE and onnx["int8"] == ONNX_INT8_FILE
    assert (export / ONNX_FILE).stat().st_size > 0 and (export / ONNX_INT8_FILE).is_file()
    assert onnx["inputs"][:2] == ["input_ids", "attention_mask"]
    assert onnx["max_abs_diff_fp32"] < 1e-5
    assert onnx["int8_weights"] == "QInt8 7-bit per-channel (dynamic)"  # no VNNI here: s7
    assert not list(export.glob(".*.tmp*"))  # written under a temporary name, then renamed
    # ORT's transformer fusions applied (eager attention traced), and the CPU's int8 recorded.
    assert onnx["fused"]["ops"]["Attention"] == 2 and onnx["fused"]["ops"]["SkipLayerNormalization"]
    assert onnx["int8_choice"].startswith("auto: s7") and "vnni" not in onnx["cpu_int8"]


def test_onnx_fp32_probabilities_equal_pytorch_within_1e_4(exported: BuiltRun):
    torch_p = Predictor.load(exported.path, device="cpu", backend="torch")
    onnx_p = Predictor.load(exported.path, backend="onnx")
    assert (torch_p.backend, onnx_p.backend) == ("torch", "onnx")
    texts = texts_of(exported)
    np.testing.assert_allclose(onnx_p.raw_probs(texts), torch_p.raw_probs(texts), rtol=0,
                               atol=1e-4)
    # The run's own test predictions (02_train, PyTorch) too; one text per call as well.
    np.testing.assert_allclose(onnx_p.raw_probs(exported.test_texts), exported.test_probs,
                               rtol=0, atol=1e-4)
    one = np.vstack([onnx_p.raw_probs([t]) for t in texts[-4:]])
    np.testing.assert_allclose(one, torch_p.raw_probs(texts[-4:]), rtol=0, atol=1e-4)
    assert (onnx_p.predict(texts).labels == torch_p.predict(texts).labels)


def test_onnx_cuts_long_texts_as_pytorch_under_head_tail(exported: BuiltRun, tmp_path: Path):
    """head_tail truncation (first 6 and last 10 tokens) is applied before either backend runs."""
    run = tmp_path / "topics"
    shutil.copytree(exported.path, run)
    info_path = run / "models" / "transformer" / "model" / EXPORT_INFO
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "truncation_side": "head_tail", "head_tokens": 6}))
    # Not the tech texts: the tiny vocabulary (resume_worker.build_tiny_model) lists "a" twice,
    # so its last piece "##y" (in "memory") gets id 99 of a 99-row embedding, which head_tail's
    # kept end reaches; the start kept under right truncation never does.
    texts = [t for t in texts_of(exported) if "memory" not in t]
    torch_p = Predictor.load(run, device="cpu", backend="torch")
    onnx_p = Predictor.load(run, backend="onnx")
    cut = torch_p.raw_probs(texts)
    right = Predictor.load(exported.path, device="cpu", backend="torch").raw_probs(texts)
    assert np.abs(cut - right).max() > 1e-3  # the cut really differs from keeping the start
    np.testing.assert_allclose(onnx_p.raw_probs(texts), cut, rtol=0, atol=1e-4)


def test_int8_changes_few_labels(exported: BuiltRun):
    texts = texts_of(exported)
    torch_p = Predictor.load(exported.path, device="cpu", backend="torch")
    int8 = Predictor.load(exported.path, backend="onnx-int8")
    raw8, raw = int8.raw_probs(texts), torch_p.raw_probs(texts)
    assert 0 < np.abs(raw8 - raw).max() < 0.05  # quantized (not the fp32 file), and close
    changed = np.mean([a != b for a, b in zip(int8.predict(texts).labels,
                                              torch_p.predict(texts).labels, strict=True)])
    assert changed <= 0.05


def _int8_weight_range(path: Path) -> tuple[int, int]:
    """The smallest and largest quantized weight of an int8 ONNX file."""
    import onnx
    from onnx import numpy_helper

    ints = [numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer
            if t.data_type == onnx.TensorProto.INT8 and t.dims and min(t.dims) > 1]
    return min(int(w.min()) for w in ints), max(int(w.max()) for w in ints)


@pytest.mark.parametrize("weights, lowest, highest", [("s8", -127, 127), ("s7", -64, 64)])
def test_signed_int8_weights_on_request(exported: BuiltRun, tmp_path: Path, weights: str,
                                        lowest: int, highest: int):
    """s8 uses the full signed range; s7 (ORT's reduce_range) keeps weights in 7 bits, so
    AVX2's u8 x s8 pair sums cannot saturate int16 on a CPU without VNNI."""
    copy = tmp_path / "model"
    shutil.copytree(exported.path / "models" / "transformer" / "model", copy)
    with pytest.raises(KitError, match="use one of auto, u8, s8, s7"):
        export_onnx(copy, int8=True, int8_weights="int4")
    record = export_onnx(copy, int8=True, int8_weights=weights)
    assert record["int8_weights"].startswith("QInt8") and record["max_abs_diff_int8"] < 0.05
    assert json.loads((copy / EXPORT_INFO).read_text())["onnx"] == record
    low, high = _int8_weight_range(copy / ONNX_INT8_FILE)
    assert lowest <= low and high <= highest  # within the range
    assert min(-low, high) > (highest - 8 if weights == "s8" else 48)  # and using it


def test_auto_int8_weights_are_signed_on_a_vnni_cpu(exported: BuiltRun, tmp_path: Path,
                                                    monkeypatch):
    from kit.models import onnx_export

    copy = tmp_path / "model"
    shutil.copytree(exported.path / "models" / "transformer" / "model", copy)
    monkeypatch.setattr(onnx_export, "cpu_int8_instructions", lambda: ["vnni", "avx2"])
    record = export_onnx(copy, int8=True)
    assert record["int8_weights"].startswith("QInt8") and record["int8_choice"].startswith(
        "auto: s8")


def test_export_keeps_the_plain_trace_when_fusion_fails(exported: BuiltRun, tmp_path: Path,
                                                        monkeypatch):
    import onnxruntime.transformers.optimizer as optimizer

    def broken(*args, **kwargs):
        raise ValueError("unknown graph")

    copy = tmp_path / "model"
    shutil.copytree(exported.path / "models" / "transformer" / "model", copy)
    monkeypatch.setattr(optimizer, "optimize_model", broken)
    record = export_onnx(copy)
    assert record["fused"] == {"skipped": "optimizer failed: ValueError: unknown graph"}
    assert record["max_abs_diff_fp32"] < 1e-5
    import onnx

    ops = {node.op_type for node in onnx.load(str(copy / ONNX_FILE)).graph.node}
    assert "MatMul" in ops and "Attention" not in ops  # the plain trace, still checked


def test_auto_picks_int8_on_cpu_and_the_submission_labels_hold(exported: BuiltRun):
    auto = Predictor.load(exported.path, device="cpu")
    assert auto.backend == "onnx-int8"
    labels = [names[0] for names in auto.predict(exported.test_texts).labels]
    by_id = exported.submission.set_index("id")["label"]
    submitted = [by_id[i] for i in exported.test["id"]]
    assert np.mean([a == b for a, b in zip(labels, submitted, strict=True)]) >= 0.95


def fake_export(folder: Path, *files: str) -> Path:
    folder.mkdir(parents=True)
    record = {"fp32": ONNX_FILE if ONNX_FILE in files else None,
              "int8": ONNX_INT8_FILE if ONNX_INT8_FILE in files else None}
    (folder / EXPORT_INFO).write_text(json.dumps({"kind": "full", "onnx": record}))
    for name in files:
        (folder / name).write_bytes(b"onnx")
    return folder


def test_backend_choice_as_documented(tmp_path: Path, monkeypatch):
    none = fake_export(tmp_path / "none")
    fp32 = fake_export(tmp_path / "fp32", ONNX_FILE)
    both = fake_export(tmp_path / "both", ONNX_FILE, ONNX_INT8_FILE)
    assert choose_backend(none, "auto", "cpu") == "torch"
    assert choose_backend(fp32, "auto", "cpu") == "onnx"
    assert choose_backend(both, "auto", "cpu") == "onnx-int8"
    assert choose_backend(both, "auto", "cuda") == "torch"  # the GPU beats ORT's CPU provider
    assert choose_backend(both, "torch", "cpu") == "torch"
    assert choose_backend(both, "onnx", "cpu") == "onnx"
    with pytest.raises(KitError, match="kit export RUN --onnx --int8"):
        choose_backend(fp32, "onnx-int8", "cpu")
    with pytest.raises(KitError, match="--device cpu"):
        choose_backend(both, "onnx", "cuda:0")
    with pytest.raises(KitError, match="use one of auto, torch, onnx, onnx-int8"):
        choose_backend(both, "tensorrt", "cpu")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # not installed (e.g. a Kaggle image)
    assert choose_backend(both, "auto", "cpu") == "torch"
    with pytest.raises(KitError, match=r"compkit\[onnx\]"):
        choose_backend(both, "onnx", "cpu")


def test_export_refuses_an_adapter_and_a_folder_without_export(tmp_path: Path, capsys):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / EXPORT_INFO).write_text(json.dumps({"kind": "adapter"}))
    with pytest.raises(KitError, match="merge=True"):
        export_onnx(adapter)
    assert main(["export", str(tmp_path / "nothing"), "--onnx"]) == 2
    assert "no transformer export" in capsys.readouterr().err
    assert main(["export", str(adapter)]) == 2
    assert "--onnx (fp32) and/or --int8" in capsys.readouterr().err


def test_export_refuses_an_unfaithful_trace(exported: BuiltRun, tmp_path: Path, monkeypatch):
    from kit.models import onnx_export

    copy = tmp_path / "model"
    shutil.copytree(exported.path / "models" / "transformer" / "model", copy)
    monkeypatch.setattr(onnx_export, "MAX_FP32_DIFF", -1.0)  # any difference is too much
    with pytest.raises(KitError, match="Predict with --backend torch"):
        export_onnx(copy, int8=True)
    assert not list(copy.glob("*.onnx")) and "onnx" not in json.loads(
        (copy / EXPORT_INFO).read_text())
    assert choose_backend(copy, "auto", "cpu") == "torch"


def test_run_exports_finds_every_fold(tmp_path: Path):
    folds = [fake_export(tmp_path / "run" / "models" / kind / f"r0_f{k}" / "model")
             for kind in ("student", "transformer") for k in range(3)]  # a student exports too
    (tmp_path / "run" / "models" / "tfidf" / "r0_f0").mkdir(parents=True)
    assert run_exports(tmp_path / "run") == folds


def test_run_exports_finds_every_seed_of_every_fold_and_the_refit(tmp_path: Path):
    models = tmp_path / "run" / "models"
    found = [fake_export(models / "transformer" / f"r0_f{k}" / f"s{s}" / "model")
             for k in range(2) for s in (5, 6)]
    found += [fake_export(models / "transformer_full" / f"s{s}" / "model") for s in (5, 6)]
    assert run_exports(tmp_path / "run") == found


def test_kit_predict_backend_flag(exported: BuiltRun, tmp_path: Path):
    src = tmp_path / "new.csv"
    exported.test[["id", "text"]].to_csv(src, index=False)
    outs = {}
    for backend in ("torch", "onnx"):
        out = tmp_path / f"{backend}.csv"
        assert main(["predict", str(exported.path), "--input", str(src), "--output", str(out),
                     "--backend", backend, "--device", "cpu"]) == 0
        outs[backend] = pd.read_csv(out)
    assert outs["onnx"]["label"].tolist() == outs["torch"]["label"].tolist()
    probs = [c for c in outs["torch"].columns if c not in ("id", "label")]
    assert probs
    np.testing.assert_allclose(outs["onnx"][probs], outs["torch"][probs], rtol=0, atol=1e-4)


def test_05_infer_uses_onnx_when_present(exported: BuiltRun, tmp_path: Path):
    from kit.core.rundir import open_run
    from kit.data.competition import load_competition
    from kit.steps.infer import predict_test

    root = exported.path.parent.parent
    results = {}
    for backend in ("auto", "torch"):
        run = open_run("params/topics.yaml", f"infer-{backend}", root=root)
        comp = load_competition(run.params, root)
        results[backend] = predict_test(run, comp, model_run=exported.path, backend=backend)
    assert results["auto"].backend == "onnx-int8" and results["torch"].backend == "torch"
    auto, torch_ = (results[b].submission["label"] for b in ("auto", "torch"))
    assert (auto == torch_).mean() >= 0.95


def infer_run(exported: BuiltRun, name: str, overrides: dict | None = None):
    from kit.core.rundir import open_run
    from kit.data.competition import load_competition

    root = exported.path.parent.parent
    run = open_run("params/topics.yaml", name, overrides, root=root)
    return run, load_competition(run.params, root)


def test_05_infer_plans_for_the_hidden_test_size(exported: BuiltRun, caplog):
    from kit.steps.infer import predict_test

    visible = len(exported.test)
    run, comp = infer_run(exported, "infer-hidden", {"kaggle.test_rows": visible * 1000})
    result = predict_test(run, comp, model_run=exported.path)
    plan = result.plan
    assert (plan.visible_rows, plan.hidden_rows) == (visible, visible * 1000)
    assert plan.backend == "onnx-int8" and plan.batch_size == 16 and plan.devices == ["cpu"]
    assert plan.projected_hours * 3600 >= visible * 1000 / plan.texts_per_second
    assert f"hidden test: {visible * 1000} rows (kaggle.test_rows; {visible} visible here)" in (
        caplog.text)
    assert len(result.submission) == visible  # the rows here are all predicted
    # The same run, 10^9 hidden rows: nothing fits, so it stops with advice and writes nothing.
    run, comp = infer_run(exported, "infer-huge", {"kaggle.test_rows": 10**9})
    with pytest.raises(KitError, match=f"Predicting {10**9} test texts"):
        predict_test(run, comp, model_run=exported.path)
    assert not (run.path / "submission.csv").exists()


def test_05_infer_two_devices_equal_one(exported: BuiltRun, monkeypatch):
    """Two GPUs faked as two CPU copies: each predicts its share in its own thread."""
    from kit.steps import infer

    texts = texts_of(exported)
    one = Predictor.load(exported.path, device="cpu", backend="torch")
    two = [one, Predictor.load(exported.path, device="cpu", backend="torch")]
    np.testing.assert_allclose(infer.predict_on_devices(two, texts), one.raw_probs(texts),
                               rtol=0, atol=1e-6)
    run, comp = infer_run(exported, "infer-one")
    single = infer.predict_test(run, comp, model_run=exported.path, backend="torch")
    monkeypatch.setattr(infer, "visible_gpus", lambda: ["cpu", "cpu"])
    run, comp = infer_run(exported, "infer-two")
    double = infer.predict_test(run, comp, model_run=exported.path, backend="torch")
    assert double.plan.devices == ["cpu", "cpu"] and single.plan.devices == ["cpu"]
    pd.testing.assert_frame_equal(double.submission, single.submission)


@pytest.mark.slow
def test_kit_serve_backend_flag(exported: BuiltRun, tmp_path: Path):
    server = start_server(exported.path, tmp_path / "serve.log", "--backend", "onnx")
    try:
        health = request(server.url + "/health").body
        assert health["backend"] == "onnx" and health["device"] == "cpu"
        texts = exported.test_texts[:5]
        answer = request(server.url + "/predict", {"texts": texts}).body
        expected = Predictor.load(exported.path, backend="onnx").predict(texts).labels
        assert [p["labels"] for p in answer["predictions"]] == expected
    finally:
        server.stop()


def test_a_copied_export_keeps_its_onnx_files(exported: BuiltRun, tmp_path: Path):
    """Kaggle datasets copy the export folder whole: the record points at files beside it."""
    copy = tmp_path / "copy"
    shutil.copytree(exported.path / "models" / "transformer" / "model", copy)
    assert choose_backend(copy, "auto", "cpu") == "onnx-int8"
