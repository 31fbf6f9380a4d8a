"""ONNX copies of a kit export (fp32, and dynamic int8) and an ONNX Runtime model that predicts.

`export_onnx(export_dir, int8=...)` writes `model.onnx` (and `model_int8.onnx`) next to the
PyTorch weights of an `export_for_kaggle` folder and records them under `onnx` in
`kit_export.json`, with the largest probability difference to PyTorch seen on check texts.
`OnnxClassifier` wraps an ONNX Runtime session so `kit.models.hf.data.predict_probs` runs it
exactly as it runs the PyTorch model: the same tokenization and truncation (head_tail too), the
same length-sorted batches, the same softmax/sigmoid; the decision rule is applied after it.

Exporter: optimum-onnx is the well-kept exporter, but its only release (0.1.0) pins
`transformers<4.58` and `optimum~=2.1`, and with the kit's transformers 5 its import fails
(`cannot import name 'get_parameter_dtype' from transformers.modeling_utils`, tried here). So
the export uses `torch.onnx.export` with dynamic batch and sequence axes. The TorchScript
exporter (`dynamo=False`) needs no extra package (the dynamo one needs onnxscript) and gives
ONNX Runtime outputs equal to PyTorch's within 1e-6 on BERT-family encoders.

Graph: the model is traced with eager attention, then ONNX Runtime's transformer optimizer
(`onnxruntime.transformers.optimizer`, what optimum's ORTOptimizer calls) fuses it into
Attention, SkipLayerNormalization, BiasGelu and EmbedLayerNormalization nodes (MiniLM: 674 nodes
down to 51). The fused graph is kept only when it passes the same 1e-4 check against PyTorch;
otherwise the plain trace is kept and `fused` says why. Measured on the demo (bench/PROFILE.md):
the fused graph predicts 1.25x PyTorch's texts/s in batches and ~3.3x one text per call.

int8: `onnxruntime.quantization.quantize_dynamic` of the fused graph (QAttention,
DynamicQuantizeMatMul), per-channel weights. Weights `auto`: signed 8-bit (optimum's
`avx512_vnni` choice) when this CPU has VNNI (AVX512-VNNI or AVX-VNNI), where ORT's U8S8 kernels
are the fast ones; else signed in 7 bits (`s7`, `reduce_range`): ORT's docs ("Quantize ONNX
models") warn that AVX2's u8 x s8 multiply-add (vpmaddubsw) can saturate int16 without VNNI and
give 7-bit weights as the workaround (OpenVINO's "Saturation (overflow) issue" page the same), so
the U8S8 kernels stay usable; `u8` (optimum's `avx2` choice) and `s8` on request. On the demo, s7
changed 7 of 1,346 test labels against PyTorch, u8 12, s8 13 (bench_infer, 2026-12-05).
Without VNNI int8 is barely faster than fp32 at all: ORT's AVX2 int8 GEMM ran at 1.1-1.5x its
fp32 GEMM on the AMD EPYC (family 23) this was measured on, so int8 then buys a 4x smaller
file more than speed; the record names the CPU's int8 instructions (`cpu_int8`) so a figure can
be read against them.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kit.core.atomic import write_json
from kit.errors import KitError
from kit.models.backends import BACKENDS, INT8_WEIGHTS
from kit.models.hardware import cpu_int8_instructions

log = logging.getLogger(__name__)

__all__ = ["BACKENDS", "ONNX_FILE", "ONNX_INT8_FILE", "OnnxClassifier", "choose_backend",
           "export_onnx", "load_onnx_export", "onnx_files", "run_exports"]

ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model_int8.onnx"
OPSET = 17
MAX_FP32_DIFF = 1e-4  # fp32 ONNX vs PyTorch probabilities; more means the trace is not faithful
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
CHECK_TEXTS = [
    "a short text",
    "a longer text with several words, so the batch is padded and the mask matters here",
    "",
]


def _require_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as err:
        raise KitError(
            "ONNX needs onnxruntime and onnx, which are not installed. Fix: "
            "pip install 'compkit[onnx]' (or onnxruntime onnx), or use --backend torch."
        ) from err
    return onnxruntime


def onnx_files(export_dir: str | Path) -> dict[str, Path]:
    """The ONNX files kit_export.json records: {"onnx": path, "onnx-int8": path}."""
    from kit.models.export import EXPORT_INFO

    folder = Path(export_dir)
    info_path = folder / EXPORT_INFO
    if not info_path.is_file():
        return {}
    recorded = json.loads(info_path.read_text()).get("onnx") or {}
    out = {}
    for backend, key in (("onnx", "fp32"), ("onnx-int8", "int8")):
        name = recorded.get(key)
        if name and (folder / name).is_file():
            out[backend] = folder / name
    return out


def run_exports(folder: str | Path) -> list[Path]:
    """The transformer export folders of a run (one, or one per fold and seed, of each model
    that has them: a transformer, its full-data refit, a distilled student), or `folder` if it
    is one. With a model's folds merged (kit.models.fold_merge) only that one is served, so only
    that one is returned (kinds.base.fit_dirs)."""
    from kit.models.export import EXPORT_INFO
    from kit.models.kinds.base import fit_dirs

    folder = Path(folder)
    if (folder / EXPORT_INFO).is_file():
        return [folder]
    models = sorted(p for p in (folder / "models").glob("*") if p.is_dir())
    found = [d / "model" for base in models for d in fit_dirs(base)
             if (d / "model" / EXPORT_INFO).is_file()]
    if not found:
        raise KitError(f"{folder}: no transformer export (models/<model>/model/{EXPORT_INFO}"
                       " or one per fold). Point `kit export` at a run folder whose 02_train "
                       "trained a transformer (or student), or at an export folder.")
    return found


def choose_backend(export_dir: str | Path, requested: str = "auto",
                   device: str | None = None) -> str:
    """Which backend predicts with this export: "torch", "onnx" (fp32) or "onnx-int8".

    "auto" (the default of `kit predict`, `kit serve` and 05_infer): on a CPU, the int8 file
    when the export has one (asking for it at export time is the choice), else model.onnx, else
    PyTorch; on a GPU, or when onnxruntime is not installed, PyTorch. An explicit "onnx" or
    "onnx-int8" is an error when its file or onnxruntime is missing, or the device is a GPU
    (ONNX Runtime runs here on its CPU provider only).
    """
    if requested not in BACKENDS:
        raise KitError(f"backend {requested!r}: use one of {', '.join(BACKENDS)}.")
    if requested == "torch":
        return "torch"
    cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    files = onnx_files(export_dir)
    if requested == "auto":
        if cuda or not files:
            return "torch"
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            log.warning("%s has ONNX files but onnxruntime is not installed: predicting with "
                        "PyTorch (pip install 'compkit[onnx]' to use them).", export_dir)
            return "torch"
        return "onnx-int8" if "onnx-int8" in files else "onnx"
    if cuda:
        raise KitError(f"--backend {requested} runs on the CPU (onnxruntime's CPU provider) and "
                       f"the device is {device or 'cuda'}. Fix: --device cpu, or --backend torch.")
    if requested not in files:
        flag = "--onnx --int8" if requested == "onnx-int8" else "--onnx"
        raise KitError(f"{export_dir} has no {requested} model (recorded in kit_export.json). "
                       f"Fix: `python -m kit export RUN {flag}` first, or --backend torch.")
    _require_onnxruntime()
    return requested


def load_onnx_export(export_dir: str | Path, backend: str = "onnx",
                     threads: int | None = None) -> tuple[OnnxClassifier, Any, list[str]]:
    """(ONNX model, tokenizer, label names) of an export, as `load_exported` gives PyTorch's.

    The PyTorch weights are not loaded; the tokenizer is the export's own, with the pad token the
    model was exported with.
    """
    from transformers import AutoTokenizer

    from kit.models.export import EXPORT_INFO

    folder = Path(export_dir)
    files = onnx_files(folder)
    if backend not in files:
        raise KitError(f"{folder} has no {backend} model; run `python -m kit export RUN --onnx"
                       f"{' --int8' if backend == 'onnx-int8' else ''}` first.")
    info = json.loads((folder / EXPORT_INFO).read_text())
    labels = json.loads((folder / "labels.json").read_text())["label_names"]
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if tokenizer.pad_token_id is None and info.get("pad_token_id") is not None:
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(int(info["pad_token_id"]))
    return OnnxClassifier(files[backend], int(info["num_labels"]), threads), tokenizer, labels


class _Logits(nn.Module):
    """The classifier as a function of its input tensors to logits (what ONNX records)."""

    def __init__(self, model: nn.Module, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, tensors, strict=True))).logits


def export_onnx(export_dir: str | Path, int8: bool = False, opset: int = OPSET,
                int8_weights: str = "auto", fuse: bool = True) -> dict[str, Any]:
    """Write model.onnx (and model_int8.onnx) into an export folder; record them; return the record.

    `int8_weights`: "u8" (unsigned, optimum's AVX2 choice), "s8" (signed, optimum's AVX512-VNNI
    and ARM64 choice; ORT's fast U8S8 kernels where VNNI exists), "s7" (signed in 7 bits, no
    int16 saturation on AVX2) or "auto": s8 when this CPU has VNNI, else s7.
    `fuse`: ORT's transformer fusions (kept only when the fused graph passes the check against
    PyTorch).

    Exports whose model is saved whole (`full`, `merged`) are supported; an adapter export is
    refused (re-export it with merge=True). Each file is written under a temporary name and
    renamed, and kit_export.json is updated last, so a killed export never looks finished.
    """
    ort = _require_onnxruntime()
    from kit.models.export import EXPORT_INFO, load_exported

    if int8_weights not in INT8_WEIGHTS:
        raise KitError(f"int8_weights is {int8_weights!r}; use one of {', '.join(INT8_WEIGHTS)}.")
    cpu_int8 = cpu_int8_instructions()
    asked, int8_weights = int8_weights, (int8_weights if int8_weights != "auto" else
                                         "s8" if "vnni" in cpu_int8 else "s7")

    folder = Path(export_dir)
    info_path = folder / EXPORT_INFO
    if not info_path.is_file():
        raise KitError(f"{folder} has no {EXPORT_INFO}: not a kit export. Point `kit export` at "
                       "a run folder (outputs/<run>) or a transformer export folder.")
    info = json.loads(info_path.read_text())
    if info.get("kind") not in ("full", "merged"):
        raise KitError(
            f"{folder} is a {info.get('kind')!r} export (LoRA adapters over a base model); ONNX "
            "export needs the model saved whole. Fix: export with merge=True "
            "(export_for_kaggle(..., merge=True)), then `kit export RUN --onnx`.")
    info.pop("onnx", None)  # an earlier record goes first: a failed export leaves none
    write_json(info_path, info)
    for old in (ONNX_FILE, ONNX_INT8_FILE):
        (folder / old).unlink(missing_ok=True)
    model, tokenizer, _ = load_exported(folder, device="cpu")
    model.float().eval()
    # Short check texts within any model's positions; the axes stay dynamic.
    enc = tokenizer(CHECK_TEXTS, padding=True, truncation=True, return_tensors="pt",
                    max_length=min(int(info.get("max_length") or 16), 16))
    names = [n for n in INPUT_NAMES if n in enc]
    wrapper = _Logits(model, names).eval()  # eval: the exporter restores the wrapper's mode
    # The reference: PyTorch as the kit predicts (its default attention), on the traced shape
    # and on another batch size and length (the dynamic axes).
    one = tokenizer(CHECK_TEXTS[1:2], truncation=True, return_tensors="pt",
                    max_length=min(int(info.get("max_length") or 24), 24))
    with torch.no_grad():
        checks = [({n: e[n].numpy().astype(np.int64) for n in names},
                   _probs(wrapper(*(e[n] for n in names)).numpy(), info)) for e in (enc, one)]
    fp32 = folder / ONNX_FILE
    tmp = folder / f".{ONNX_FILE}.tmp"
    fused: dict[str, Any] | None = None
    if fuse:
        # Eager attention traces to the MatMul/Softmax pattern ORT's optimizer fuses; the SDPA
        # trace (its mask through Where/IsNaN) stays unfused. Failing the check, the plain
        # trace of the model as loaded is kept.
        attention = getattr(model.config, "_attn_implementation", None)
        if attention and attention != "eager" and hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation("eager")
        _trace(wrapper, enc, names, tmp, opset)
        fused = _fuse(tmp, model.config, checks, info)
        if "ops" not in fused and getattr(model.config, "_attn_implementation", None) != attention:
            model.set_attn_implementation(attention)
            _trace(wrapper, enc, names, tmp, opset)
    else:
        _trace(wrapper, enc, names, tmp, opset)
    record: dict[str, Any] = {
        "fp32": ONNX_FILE, "int8": None, "inputs": names, "opset": opset,
        "exporter": f"torch.onnx (TorchScript) {torch.__version__}",
        "onnxruntime": ort.__version__, "fused": fused, "cpu_int8": cpu_int8,
        "max_abs_diff_fp32": _max_diff(_session(tmp, 1), checks, info),
    }
    os.replace(tmp, fp32)
    if record["max_abs_diff_fp32"] > MAX_FP32_DIFF:
        fp32.unlink()
        raise KitError(
            f"The ONNX export of {folder} gives probabilities up to "
            f"{record['max_abs_diff_fp32']:.2g} away from PyTorch's (allowed {MAX_FP32_DIFF:g}):"
            " this architecture does not trace faithfully. Predict with --backend torch.")
    if int8:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # ONNX Runtime suggests quant_pre_process first; on these graphs its symbolic shape
        # inference stops ("Incomplete symbolic shape inference", seen on MiniLM), so the
        # graph is quantized as it is (ORT's own graph optimizations run at load). The fused
        # nodes (com.microsoft domain) have no ONNX shape inference: their outputs are float.
        tmp8 = folder / f".{ONNX_INT8_FILE}.tmp"
        weights = QuantType.QUInt8 if int8_weights == "u8" else QuantType.QInt8
        seven = int8_weights == "s7"  # reduce_range: 7-bit weights, no int16 saturation on AVX2
        quantize_dynamic(fp32, tmp8, weight_type=weights, per_channel=True, reduce_range=seven,
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        os.replace(tmp8, folder / ONNX_INT8_FILE)
        if "vnni" not in cpu_int8:
            log.info("This CPU has no VNNI (%s): ONNX Runtime's int8 GEMM runs about as fast as "
                     "fp32 here; int8 gives a smaller file, little speed.", cpu_int8 or "unknown")
        kind = f"{weights.name}{' 7-bit' if seven else ''} per-channel (dynamic)"
        record.update(int8=ONNX_INT8_FILE, int8_weights=kind,
                      int8_choice=f"{asked}: {int8_weights} (CPU int8: {cpu_int8 or 'unknown'})",
                      max_abs_diff_int8=_max_diff(_session(folder / ONNX_INT8_FILE, 1), checks,
                                                  info))
    write_json(info_path, {**info, "onnx": record})
    log.info("ONNX export of %s: %s (largest probability difference to PyTorch %.2g)%s", folder,
             ONNX_FILE, record["max_abs_diff_fp32"],
             f", {ONNX_INT8_FILE} ({record['max_abs_diff_int8']:.2g})" if int8 else "")
    return record


def _trace(wrapper: nn.Module, enc: Any, names: list[str], path: Path, opset: int) -> None:
    """torch.onnx.export of the wrapper with dynamic batch and sequence axes, to `path`."""
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"logits": {0: "batch"}}
    with torch.no_grad(), warnings.catch_warnings():
        # Expected and harmless here: the TorchScript exporter's deprecation notice, and tracer
        # notes on Python conditions that are constant for an encoder (no causal mask, no
        # key/value offset); outputs on other batch sizes and lengths are under test.
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*(legacy TorchScript|aten::index).*")
        torch.onnx.export(wrapper, tuple(enc[n] for n in names), str(path), input_names=names,
                          output_names=["logits"], dynamic_axes=axes, opset_version=opset,
                          dynamo=False)


def _fuse(path: Path, config: Any, checks: list[tuple[dict[str, np.ndarray], np.ndarray]],
          info: dict[str, Any]) -> dict[str, Any]:
    """Fuse the graph at `path` in place with ORT's BERT-family optimizer, if it stays faithful.

    Returns {"ops": fused node counts} or {"skipped": why}. `opt_level=0`: only the fusions
    are saved; ORT's hardware-specific rewrites run at load.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    heads = int(getattr(config, "num_attention_heads", 0) or 0)
    hidden = int(getattr(config, "hidden_size", 0) or 0)
    try:
        optimized = optimize_model(str(path), model_type="bert", num_heads=heads,
                                   hidden_size=hidden, opt_level=0)
    except Exception as err:  # an architecture the optimizer does not know: keep the trace
        log.warning("ONNX Runtime's optimizer failed on %s (%s): kept unfused", path, err)
        return {"skipped": f"optimizer failed: {type(err).__name__}: {err}"[:300]}
    ops = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    if not ops:
        return {"skipped": "no fusion applies to this graph"}
    candidate = path.with_name(path.name + ".fused")
    optimized.save_model_to_file(str(candidate))
    diff = _max_diff(_session(candidate, 1), checks, info)
    if diff > MAX_FP32_DIFF:
        candidate.unlink()
        log.warning("The fused ONNX graph is %.2g away from PyTorch: kept unfused", diff)
        return {"skipped": f"fused graph {diff:.2g} away from PyTorch"}
    os.replace(candidate, path)
    return {"ops": ops}


def _probs(logits: np.ndarray, info: dict[str, Any]) -> np.ndarray:
    from kit.models.hf.data import logits_to_probs

    multilabel = info.get("problem_type") == "multi_label_classification"
    return logits_to_probs(logits, "multilabel" if multilabel else "multiclass")


def _max_diff(session: Any, checks: list[tuple[dict[str, np.ndarray], np.ndarray]],
              info: dict[str, Any]) -> float:
    """The largest difference of the session's probabilities to the reference ones."""
    return max(float(np.abs(_probs(session.run(["logits"], feed)[0], info) - reference).max())
               for feed, reference in checks)


def _session(path: Path, threads: int | None) -> Any:
    ort = _require_onnxruntime()
    options = ort.SessionOptions()
    # The same threads as torch by default, so the backends compare on equal terms.
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxClassifier(nn.Module):
    """An ONNX Runtime session (CPU) behaving as a sequence classifier for `predict_probs`.

    `predict_probs` reads the device from the first parameter and calls `model(**batch).logits`;
    the empty CPU parameter and `forward` give it exactly that, so the ONNX path shares every line
    of tokenization, batching and probability code with the PyTorch path.
    """

    def __init__(self, path: str | Path, num_labels: int, threads: int | None = None):
        super().__init__()
        self.path = Path(path)
        self.session = _session(self.path, threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.config = type("OnnxConfig", (), {"num_labels": num_labels})()
        self._cpu = nn.Parameter(torch.empty(0), requires_grad=False)

    def forward(self, **batch: torch.Tensor) -> Any:
        from transformers.modeling_outputs import SequenceClassifierOutput

        missing = [n for n in self.input_names if n not in batch]
        if missing:
            raise KitError(f"{self.path} expects inputs {self.input_names}; the tokenizer gave "
                           f"{sorted(batch)} (missing {missing}). Re-run `kit export --onnx`.")
        feed = {n: batch[n].cpu().numpy().astype(np.int64) for n in self.input_names}
        logits = self.session.run(["logits"], feed)[0]
        return SequenceClassifierOutput(logits=torch.from_numpy(np.ascontiguousarray(logits)))
