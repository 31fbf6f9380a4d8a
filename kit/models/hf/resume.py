"""What makes a rerun resume or reuse: settings/data fingerprints and the finished result.

A rerun with the same settings and data resumes the checkpoints (or returns the saved result of
a finished run); other settings or data are refused instead of mixing two runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kit.config.params import TransformerParams, diff_params
from kit.core.atomic import save_npz, write_json
from kit.errors import KitError
from kit.models.hf.checkpoints import complete_checkpoints, marked_checkpoints

log = logging.getLogger(__name__)

RESULT_FILE = "transformer_result.json"
PREDICTIONS_FILE = "transformer_predictions.npz"
HISTORY_FILE = "transformer_history.json"
FINGERPRINT_FILE = "kit_fingerprint.json"
# Settings that change how a run is stored or bounded, not what it computes: a rerun may change
# them and still resume.
NOT_FINGERPRINTED = {
    "time_budget_minutes", "checkpoint_dir", "disk_budget_gb", "save_total_limit",
    "eval_batch_size", "memory_budget_gb", "checkpoint_fsync", "distributed",
    "keep_checkpoints", "merge_folds",
    "seeds",  # the list of seeds: what a fit computes depends on its own seed (`seed` below)
}


@dataclass
class TransformerResult:
    """Predictions and bookkeeping of one fine-tuning call."""

    val_probs: np.ndarray
    test_probs: np.ndarray
    global_step: int
    max_steps: int
    resumed_from_step: int | None
    history: list[dict[str, Any]]
    model_dir: Path | None  # None until the run completed
    max_length: int
    hardware: dict[str, Any]
    completed: bool = True  # False: stopped by the time budget; call again to continue
    best_metric: float | None = None
    best_step: int | None = None
    checkpoint_dir: Path | None = None
    train_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def training_finished(state: dict[str, Any], patience: int) -> bool:
    """Whether a checkpoint's trainer state is the end of training (last step or early stop)."""
    if state["global_step"] >= state["max_steps"]:
        return True
    if patience <= 0:
        return False
    stored = state.get("stateful_callbacks", {}).get("EarlyStoppingCallback") or {}
    if isinstance(stored, list):  # one entry per callback of that class
        stored = stored[0] if stored else {}
    counter = stored.get("attributes", {}).get("early_stopping_patience_counter", 0)
    return counter >= patience



def hash_data(*parts: Any) -> str:
    digest = hashlib.sha256()
    for part in parts:
        if part is None:
            digest.update(b"<none>")
        elif isinstance(part, np.ndarray):
            digest.update(np.ascontiguousarray(part.astype(np.int64)).tobytes())
        else:
            for text in part:
                digest.update(str(text).encode("utf-8", "surrogatepass"))
                digest.update(b"\x00")
        digest.update(b"\x01")
    return digest.hexdigest()


def make_fingerprint(
    cfg: TransformerParams, seed: int, task: str, label_names: list[str], metric: str,
    train_texts: list[str], y_train: np.ndarray, val_texts: list[str], y_val: np.ndarray | None,
    processes: int = 1,
) -> dict[str, Any]:
    """What makes two runs the same run: settings (bar NOT_FINGERPRINTED) and data; `processes`
    (DDP ranks) only when above 1, as the global batch is then batch_size x processes."""
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_FINGERPRINTED}
    if processes > 1:
        settings["processes"] = int(processes)
    return {
        "settings": {**settings, "seed": seed, "task": task, "label_names": list(label_names),
                     "metric": metric},
        "data": hash_data(train_texts, y_train, val_texts, y_val),
    }


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = diff_params(old.get("settings", {}), new.get("settings", {}))
    if old.get("data") != new.get("data"):
        out.append("the training/validation texts or labels")
    return out


def claim(checkpoint_root: Path, fingerprint: dict[str, Any]) -> None:
    """Refuse to resume checkpoints made with other settings or data."""
    path = checkpoint_root / FINGERPRINT_FILE
    checkpoint_root.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        old = json.loads(path.read_text())
        diff = _differences(old, fingerprint)
        if diff and complete_checkpoints(checkpoint_root):
            raise KitError(
                f"The checkpoints in {checkpoint_root} were made with other settings "
                f"({'; '.join(diff[:6])}), so resuming them would mix two runs. Delete that "
                "folder to start over with the new settings, or give this run another name "
                "(a new run folder) to keep both."
            )
    write_json(path, fingerprint)


def load_finished(
    work_dir: Path, fingerprint: dict[str, Any], test_hash: str,
    test_texts: list[str] | None = None, eval_batch_size: int = 64,
) -> TransformerResult | None:
    """The saved result of a finished run in `work_dir`, or None when it has to (re)train.

    Other `test_texts` than those predicted: with the checkpoints still there, None (the caller
    reloads the finished checkpoint and predicts); with them released (kit.models.hf.checkpoints
    `release_checkpoints`), the export predicts them here and the result is saved again.
    """
    marker = work_dir / RESULT_FILE
    if not marker.is_file():
        return None
    saved = json.loads(marker.read_text())
    diff = _differences(saved.get("fingerprint", {}), fingerprint)
    if diff:
        raise KitError(
            f"{work_dir} already holds a finished transformer run made with other settings "
            f"({'; '.join(diff[:6])}). Delete {work_dir / RESULT_FILE} and the checkpoints to "
            "retrain there, or give this run another name (a new run folder)."
        )
    info = saved["result"]
    with np.load(work_dir / PREDICTIONS_FILE) as arrays:
        val_probs, test_probs = arrays["val_probs"], arrays["test_probs"]
    if saved.get("test_hash") != test_hash:
        # Same training, other test texts: the finished model predicts them, not retrained.
        log.info("The test texts differ from those predicted in %s: predicting them again with "
                 "the trained model.", work_dir)
        released = not (info.get("checkpoint_dir")
                        and marked_checkpoints(Path(info["checkpoint_dir"])))
        from kit.models.export import EXPORT_INFO

        export = Path(info["model_dir"])
        if test_texts is None or not released or not (export / EXPORT_INFO).is_file():
            return None  # the caller reloads the finished checkpoint
        test_probs = _predict_with_export(export, test_texts, eval_batch_size)
        # No matching hash while the predictions change: a kill in between re-predicts.
        write_json(marker, {**saved, "test_hash": None})
        save_npz(work_dir / PREDICTIONS_FILE, val_probs=val_probs, test_probs=test_probs)
        write_json(marker, {**saved, "test_hash": test_hash})
    else:
        log.info("Transformer already trained in %s (step %s): loaded its saved predictions.",
                 work_dir, info["global_step"])
    return TransformerResult(
        val_probs=val_probs,
        test_probs=test_probs,
        global_step=info["global_step"],
        max_steps=info["max_steps"],
        resumed_from_step=info["resumed_from_step"],
        history=json.loads((work_dir / HISTORY_FILE).read_text()),
        model_dir=Path(info["model_dir"]),
        max_length=info["max_length"],
        hardware=info["hardware"],
        completed=True,
        best_metric=info["best_metric"],
        best_step=info["best_step"],
        checkpoint_dir=Path(info["checkpoint_dir"]) if info.get("checkpoint_dir") else None,
        train_seconds=info.get("train_seconds", 0.0),
        extra={"loaded_from": str(marker)},
    )


def _predict_with_export(export: Path, texts: list[str], batch_size: int) -> np.ndarray:
    """Probabilities of `texts` from a finished run's export (its checkpoints are gone)."""
    import torch

    from kit.models.export import EXPORT_INFO, load_exported
    from kit.models.hardware import detect_hardware
    from kit.models.hf.data import set_truncation_side
    from kit.models.hf.views import ViewPlan, predict_with_views

    info = json.loads((export / EXPORT_INFO).read_text())
    model, tokenizer, _ = load_exported(export)
    set_truncation_side(tokenizer, info.get("truncation_side", "right"))
    amp = None
    if next(model.parameters()).device.type == "cuda":  # as training predicted on this GPU
        profile = detect_hardware()
        amp = torch.bfloat16 if profile.bf16 else torch.float16 if profile.fp16 else None
    return predict_with_views(ViewPlan.from_export(info), model, tokenizer, texts,
                              batch_size=batch_size, max_length=int(info["max_length"]),
                              task=info["task"], autocast_dtype=amp, progress=True,
                              desc="predict test")


def save_finished(
    work_dir: Path, result: TransformerResult, fingerprint: dict[str, Any], test_hash: str
) -> None:
    from kit.models.hf.plots import plot_training_curves

    save_npz(work_dir / PREDICTIONS_FILE, val_probs=result.val_probs, test_probs=result.test_probs)
    write_json(work_dir / HISTORY_FILE, result.history)
    fig = plot_training_curves(result.history, title=f"step {result.global_step}")
    fig.savefig(work_dir / "training_curves.png", dpi=110)
    info = {
        "global_step": result.global_step,
        "max_steps": result.max_steps,
        "resumed_from_step": result.resumed_from_step,
        "model_dir": str(result.model_dir),
        "max_length": result.max_length,
        "hardware": result.hardware,
        "best_metric": result.best_metric,
        "best_step": result.best_step,
        "checkpoint_dir": str(result.checkpoint_dir) if result.checkpoint_dir else None,
        "train_seconds": result.train_seconds,
    }
    # Written last: its presence means everything above is complete.
    write_json(work_dir / RESULT_FILE,
                       {"fingerprint": fingerprint, "test_hash": test_hash, "result": info})

