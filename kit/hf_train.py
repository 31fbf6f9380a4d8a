"""Fine-tune a Hugging Face classifier with `Trainer` so that a killed session resumes exactly.

`train_transformer(...)` trains, checkpoints, evaluates and predicts. Calling it again with the
same arguments and `work_dir`:
- after it finished: returns the saved result (no training);
- after a kill, a crash or a time-budget stop: resumes from the latest *complete* checkpoint
  (weights, optimizer, scheduler, grad scaler, RNG states, data order, early-stopping counter,
  best metric) and ends with the same model and predictions as an uninterrupted run.

What transformers 5.23 does and what this module adds (PITFALLS.md "Resume after a killed
session"):
- `Trainer._save_checkpoint` writes `checkpoint-N/` in place, file by file; a kill mid-save
  leaves a folder that `get_last_checkpoint` would pick. Here each checkpoint is written to a
  staging folder, marked complete, then renamed; resume only considers marked folders.
- The stock `LengthGroupedSampler` shuffles from RNG state that a resume does not restore, so a
  resumed epoch would see another order; `EpochSeededLengthGroupedSampler` fixes it.
- Rotation keeps the last `save_total_limit` checkpoints plus the best, within `disk_budget_gb`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    EarlyStoppingCallback,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    set_seed,
)
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_callback import TrainerState

from kit.atomic import write_atomic
from kit.errors import KitError
from kit.hf_data import (
    EpochSeededLengthGroupedSampler,
    logits_to_probs,
    make_collator,
    model_max_length,
    predict_probs,
    suggest_max_length,
    tokenize_texts,
)
from kit.model_source import resolve_model
from kit.params import TransformerParams, diff_params

__all__ = [
    "TransformerResult",
    "class_weight_vector",
    "complete_checkpoints",
    "load_classifier",
    "train_transformer",
]

COMPLETE_MARKER = "kit_checkpoint_complete.json"
RESULT_FILE = "transformer_result.json"
PREDICTIONS_FILE = "transformer_predictions.npz"
FINGERPRINT_FILE = "kit_fingerprint.json"
_STAGING = ".staging"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# Settings that change how a run is stored or bounded, not what it computes: a rerun may change
# them and still resume.
_NOT_FINGERPRINTED = {
    "time_budget_minutes", "checkpoint_dir", "disk_budget_gb", "save_total_limit",
    "eval_batch_size", "memory_budget_gb",
}


def _now() -> float:
    """Clock for the time budget (a function so tests can substitute a fake clock)."""
    return time.monotonic()


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


# --------------------------------------------------------------------------------------------
# Model loading and class weights


def load_classifier(
    cfg: TransformerParams,
    num_labels: int,
    task: str,
    label_names: list[str],
    profile: Any,
    report: dict[str, Any] | None = None,
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """A sequence classifier and its tokenizer for `cfg.model`; LoRA models come from kit.llm.

    `report` (LoRA only) collects what kit.llm decided: backend, target modules, head, memory.
    """
    path = resolve_model(cfg.model)
    if cfg.lora.enabled:
        from kit.llm import load_lora_classifier  # heavy (peft, maybe bitsandbytes): lazily

        return load_lora_classifier(
            dataclasses.replace(cfg, model=path), num_labels, task, label_names, profile,
            report=report,
        )
    tokenizer = AutoTokenizer.from_pretrained(path)
    problem = (
        "multi_label_classification" if task == "multilabel" else "single_label_classification"
    )
    model = AutoModelForSequenceClassification.from_pretrained(
        path,
        num_labels=num_labels,
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
        problem_type=problem,
        dtype=torch.float32,  # trainable weights stay fp32; Trainer's autocast does fp16/bf16
    )
    # Decoder models have no pad token; batching needs one on the tokenizer AND the model config
    # (transformers #34055), also after a reload, hence it is saved with both.
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def class_weight_vector(
    labels: np.ndarray, num_labels: int, task: str, mode: str
) -> np.ndarray | None:
    """Per-class loss weights (multiclass/binary) or BCE `pos_weight` (multilabel).

    "balanced": n / (K * n_k) (scikit-learn's rule), or negatives/positives per column for
    multilabel; "sqrt": its square root (milder); "none": None.
    """
    if mode == "none":
        return None
    if mode not in ("balanced", "sqrt"):
        raise KitError(
            f"transformer.class_weights is {mode!r}; use 'balanced', 'sqrt' or 'none'."
        )
    labels = np.asarray(labels)
    if task == "multilabel":
        pos = labels.sum(axis=0).astype(float)
        neg = len(labels) - pos
        weights = np.where(pos > 0, neg / np.maximum(pos, 1), 1.0)
    else:
        counts = np.bincount(labels.astype(int), minlength=num_labels).astype(float)
        weights = np.where(counts > 0, len(labels) / (num_labels * np.maximum(counts, 1)), 1.0)
    if mode == "sqrt":
        weights = np.sqrt(weights)
    return weights.astype(np.float32)


# --------------------------------------------------------------------------------------------
# Checkpoints


def complete_checkpoints(root: Path) -> list[Path]:
    """Checkpoint folders under `root` that were completely written, oldest step first."""
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _CHECKPOINT.match(child.name)
        if match and child.is_dir() and (child / COMPLETE_MARKER).is_file():
            found.append((int(match[1]), child))
    return [path for _, path in sorted(found)]


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class _KitTrainer(Trainer):
    """Trainer with a weighted/smoothed loss, a resumable length-grouped sampler, and atomic
    checkpoints with rotation by count and disk budget."""

    # compute_loss returns a per-batch mean; Trainer then divides by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        *args: Any,
        task: str,
        class_weights: np.ndarray | None,
        label_smoothing: float,
        train_lengths: list[int],
        keep_last: int,
        disk_budget_gb: float,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.task = task
        self.class_weights = None if class_weights is None else torch.tensor(class_weights)
        self.label_smoothing = float(label_smoothing)
        self.train_lengths = train_lengths
        self.keep_last = max(1, int(keep_last))
        self.disk_budget_bytes = float(disk_budget_gb) * 1024**3
        self._staging_root: Path | None = None
        self._warned_budget = False

    # -- data order ---------------------------------------------------------------------------
    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler:
        # `train_sampling_strategy="group_by_length"` is set in the arguments (so evaluation is
        # grouped by Trainer itself); training swaps in the resumable, per-epoch seeded version.
        batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return EpochSeededLengthGroupedSampler(batch, self.train_lengths, seed)

    # -- loss ---------------------------------------------------------------------------------
    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        # A Trainer subclass rather than `compute_loss_func`: Trainer assumes such a function
        # normalises over the whole accumulated batch; a per-batch mean is simpler to get right.
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        logits = outputs.logits.float()
        weights = None
        if self.class_weights is not None:
            weights = self.class_weights.to(logits.device)
        if self.task == "multilabel":
            target = labels.float()
            if self.label_smoothing:
                target = target * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
            loss = F.binary_cross_entropy_with_logits(logits, target, pos_weight=weights)
        else:
            loss = F.cross_entropy(
                logits, labels.long(), weight=weights, label_smoothing=self.label_smoothing
            )
        return (loss, outputs) if return_outputs else loss

    # -- atomic checkpoints -------------------------------------------------------------------
    def _get_output_dir(self, trial: Any) -> str:
        if self._staging_root is not None:
            return str(self._staging_root)
        return super()._get_output_dir(trial)

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        run_dir = Path(super()._get_output_dir(trial))
        step = self.state.global_step
        staging_root = run_dir / _STAGING
        shutil.rmtree(staging_root, ignore_errors=True)
        staging_root.mkdir(parents=True)
        self._staging_root = staging_root
        try:
            # Trainer writes weights, optimizer, scheduler, scaler, RNG and trainer state into
            # <staging>/checkpoint-N; its own rotation is off (save_total_limit=None).
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_root = None
        staged = staging_root / f"checkpoint-{step}"
        best = self.state.best_model_checkpoint
        if best is not None and Path(best).parent == staging_root:
            # The best is this very checkpoint: record its final path, not the staging one.
            self.state.best_model_checkpoint = str(run_dir / Path(best).name)
            self.state.save_to_json(str(staged / TRAINER_STATE_NAME))
        (staged / COMPLETE_MARKER).write_text(
            json.dumps({"step": step, "max_steps": self.state.max_steps, "time": time.time()})
        )
        final = run_dir / f"checkpoint-{step}"
        if final.exists():
            shutil.rmtree(final)
        os.replace(staged, final)  # atomic on one filesystem: complete or absent
        shutil.rmtree(staging_root, ignore_errors=True)
        self._rotate(run_dir)

    def _rotate(self, run_dir: Path) -> None:
        checkpoints = complete_checkpoints(run_dir)
        if not checkpoints:
            return
        protected = {checkpoints[-1]}
        if self.state.best_model_checkpoint:
            protected.add(Path(self.state.best_model_checkpoint))
        recent = set(checkpoints[-self.keep_last :])
        kept = []
        for path in checkpoints:
            if path in protected or path in recent:
                kept.append(path)
            else:
                shutil.rmtree(path, ignore_errors=True)
        sizes = {path: _folder_bytes(path) for path in kept}
        for path in list(kept):  # oldest first
            if sum(sizes.values()) <= self.disk_budget_bytes:
                break
            if path not in protected:
                shutil.rmtree(path, ignore_errors=True)
                sizes.pop(path)
        total = sum(sizes.values())
        if total > self.disk_budget_bytes and not self._warned_budget:
            self._warned_budget = True
            print(
                f"Checkpoints in {run_dir} take {total / 1024**3:.2f} GB, above "
                f"transformer.disk_budget_gb={self.disk_budget_bytes / 1024**3:g}, even with only "
                "the latest and the best kept. Raise the budget or free disk space."
            )


class _TimeBudget(TrainerCallback):
    """Stops with a checkpoint when the next steps would overrun the time budget."""

    def __init__(self, budget_seconds: float | None, started: float):
        self.budget = budget_seconds
        self.started = started
        self.stopped_at: int | None = None
        self._t_begin = started
        self._step_begin = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._t_begin = _now()
        self._step_begin = state.global_step

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.budget is None or state.global_step >= state.max_steps:
            return
        now = _now()
        per_step = (now - self._t_begin) / max(1, state.global_step - self._step_begin)
        # Margin: two more steps' worth of time for the checkpoint write and the predictions.
        if now - self.started + 2 * per_step >= self.budget:
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step


# --------------------------------------------------------------------------------------------
# The entry point


def train_transformer(
    train_texts: list[str],
    train_labels: np.ndarray,
    val_texts: list[str] | None,
    val_labels: np.ndarray | None,
    test_texts: list[str] | None,
    *,
    task: str,
    label_names: list[str],
    cfg: TransformerParams,
    seed: int,
    work_dir: Path,
    metric: str = "f1_macro",
) -> TransformerResult:
    """Fine-tune `cfg.model` on the training texts; resume or return the saved result if rerun.

    Validation (if given) is scored with `metric` every `cfg.eval_steps`, picks the best
    checkpoint (loaded at the end) and drives early stopping. Returns validation and test
    probabilities in the kit's conventions, from the best model.
    """
    started = _now()
    from kit.hardware import detect_hardware, pin_single_gpu
    from kit.metrics import get_metric, score

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    val_texts = list(val_texts) if val_texts is not None else []
    test_texts = list(test_texts) if test_texts is not None else []
    train_texts = list(train_texts)
    num_labels = len(label_names)
    y_train = _check_labels(train_labels, len(train_texts), num_labels, task, "train_labels")
    y_val = (
        _check_labels(val_labels, len(val_texts), num_labels, task, "val_labels")
        if val_texts
        else None
    )
    has_val = bool(val_texts)
    metric_spec = get_metric(metric)
    if task not in metric_spec.tasks:
        raise KitError(
            f"metric {metric!r} is not defined for a {task} task; pick one of the metrics for "
            f"{task} (e.g. f1_macro)."
        )
    _check_cfg(cfg, has_val)

    checkpoint_root = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else work_dir / "checkpoints"
    fingerprint = _fingerprint(cfg, seed, task, label_names, metric, train_texts, y_train,
                               val_texts, y_val)
    test_hash = _hash_data(test_texts)
    done = _load_finished(work_dir, fingerprint, test_hash)
    if done is not None:
        return done
    _claim(checkpoint_root, fingerprint)

    profile = pin_single_gpu(detect_hardware())
    from kit.hardware import SingleGpuTrainingArguments, training_precision_kwargs

    set_seed(seed)  # the classification head's initialisation depends on it
    load_report: dict[str, Any] = {}
    model, tokenizer = load_classifier(cfg, num_labels, task, label_names, profile,
                                       report=load_report)
    tokenizer.truncation_side = cfg.truncation_side
    limit = model_max_length(tokenizer, getattr(model, "config", None))
    # The percentile from at most ~20k texts: as good, and no second full tokenisation pass.
    sample = train_texts[:: max(1, len(train_texts) // 20_000)]
    max_length = cfg.max_length or suggest_max_length(tokenizer, sample, 99.0, limit=limit)
    if max_length > limit:
        raise KitError(
            f"transformer.max_length is {max_length}, but {cfg.model} accepts at most {limit} "
            f"tokens. Set transformer.max_length <= {limit} (or null to derive it from the data)."
        )
    train_ds = tokenize_texts(tokenizer, train_texts, max_length, y_train, task)
    val_ds = tokenize_texts(tokenizer, val_texts, max_length, y_val, task) if has_val else None

    from kit.llm import resolve_optimizer  # 8-bit/paged optimizers fall back without bitsandbytes

    optim, notice = resolve_optimizer(cfg.optimizer, profile)
    if notice:
        print(notice)

    def compute_metrics(eval_pred: Any) -> dict[str, float]:
        logits = eval_pred.predictions
        logits = logits[0] if isinstance(logits, (tuple, list)) else logits
        labels = np.asarray(eval_pred.label_ids)
        labels = labels.astype(int)
        return {metric: score(metric, labels, logits_to_probs(logits, task), task=task)}

    args = SingleGpuTrainingArguments(
        output_dir=str(checkpoint_root),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        lr_scheduler_type=cfg.scheduler,
        warmup_steps=cfg.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=cfg.weight_decay,
        optim=optim,
        activation_checkpointing=cfg.gradient_checkpointing,
        eval_strategy="steps" if has_val else "no",
        eval_steps=cfg.eval_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=None,  # rotation is done after each atomic save, see _KitTrainer
        load_best_model_at_end=has_val,
        metric_for_best_model=metric if has_val else None,
        greater_is_better=metric_spec.greater_is_better if has_val else None,
        logging_strategy="steps",
        logging_steps=max(1, cfg.eval_steps // 4),
        train_sampling_strategy="group_by_length",
        restore_callback_states_from_checkpoint=True,  # early-stopping counter
        seed=seed,
        data_seed=seed,
        label_names=["labels"],
        remove_unused_columns=False,  # the dataset holds model inputs only
        dataloader_num_workers=0,
        report_to="none",
        **training_precision_kwargs(profile),
    )
    budget = _TimeBudget(
        cfg.time_budget_minutes * 60 if cfg.time_budget_minutes else None, started
    )
    callbacks: list[TrainerCallback] = [budget]
    if cfg.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    trainer = _KitTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        data_collator=make_collator(tokenizer),
        processing_class=tokenizer,
        compute_metrics=compute_metrics if has_val else None,
        callbacks=callbacks,
        task=task,
        class_weights=class_weight_vector(y_train, num_labels, task, cfg.class_weights),
        label_smoothing=cfg.label_smoothing,
        train_lengths=train_ds.lengths,
        keep_last=cfg.save_total_limit,
        disk_budget_gb=cfg.disk_budget_gb,
    )

    shutil.rmtree(checkpoint_root / _STAGING, ignore_errors=True)  # a save cut short earlier
    checkpoints = complete_checkpoints(checkpoint_root)
    resume = checkpoints[-1] if checkpoints else None
    resumed_from = None
    finished = False
    if resume is not None:
        saved_state = json.loads((resume / TRAINER_STATE_NAME).read_text())
        resumed_from = int(saved_state["global_step"])
        finished = _training_finished(saved_state, cfg.early_stopping_patience)
        print(f"resumed from step {resumed_from} of {saved_state['max_steps']} ({resume})"
              + ("; training had already finished there" if finished else ""))
    t_train = _now()
    if finished:
        # Trainer would train on: early stopping's decision is not a resumable state (control
        # flags are reset when training begins). Load what the finished run ended with instead.
        trainer.state = TrainerState.load_from_json(str(resume / TRAINER_STATE_NAME))
        best = trainer.state.best_model_checkpoint
        trainer._load_from_checkpoint(best if best and Path(best).is_dir() else str(resume))
    else:
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    train_seconds = _now() - t_train
    state = trainer.state
    completed = budget.stopped_at is None
    if not completed:
        print(
            f"Stopped at step {state.global_step} of {state.max_steps} to stay within "
            f"transformer.time_budget_minutes={cfg.time_budget_minutes:g}; the checkpoint is in "
            f"{checkpoint_root}. Run the same call again (same work_dir, e.g. rerun the notebook "
            "or the cell) to continue from there; predictions below come from the best model so "
            "far."
        )

    amp = torch.bfloat16 if profile.bf16 else torch.float16 if profile.fp16 else None
    model = trainer.model
    val_probs = predict_probs(model, tokenizer, val_texts, cfg.eval_batch_size, max_length, task,
                              autocast_dtype=amp)
    test_probs = predict_probs(model, tokenizer, test_texts, cfg.eval_batch_size, max_length,
                               task, autocast_dtype=amp)
    best_step = None
    if state.best_model_checkpoint:
        match = _CHECKPOINT.match(Path(state.best_model_checkpoint).name)
        best_step = int(match[1]) if match else None
    result = TransformerResult(
        val_probs=val_probs,
        test_probs=test_probs,
        global_step=int(state.global_step),
        max_steps=int(state.max_steps),
        resumed_from_step=resumed_from,
        history=list(state.log_history),
        model_dir=None,
        max_length=int(max_length),
        hardware=profile.to_dict(),
        completed=completed,
        best_metric=None if state.best_metric is None else float(state.best_metric),
        best_step=best_step,
        checkpoint_dir=checkpoint_root,
        train_seconds=float(train_seconds),
        extra={"load_report": load_report} if load_report else {},
    )
    if load_report:
        from kit.memory_plan import measured_peak_gb

        load_report["measured_peak_after_training_gb"] = measured_peak_gb(profile.device)
    if completed:
        result.model_dir = _export_model(trainer, tokenizer, work_dir, task, label_names,
                                         max_length, cfg)
        _save_finished(work_dir, result, fingerprint, test_hash)
    return result


# --------------------------------------------------------------------------------------------
# Helpers


def _check_labels(
    labels: Any, n: int, num_labels: int, task: str, name: str
) -> np.ndarray:
    if labels is None:
        raise KitError(f"{name} is missing; pass one label per text.")
    y = np.asarray(labels)
    if task not in ("binary", "multiclass", "multilabel"):
        raise KitError(f"task is {task!r}; use binary, multiclass or multilabel.")
    if task == "binary" and num_labels != 2:
        raise KitError(f"A binary task needs 2 label_names [negative, positive], got {num_labels}.")
    if task == "multilabel":
        if y.ndim != 2 or y.shape != (n, num_labels):
            raise KitError(
                f"{name} has shape {y.shape}; a multilabel task needs a multi-hot array of shape "
                f"({n}, {num_labels}) (one 0/1 column per label name)."
            )
        if not np.isin(y, (0, 1)).all():
            raise KitError(f"{name} holds values other than 0/1; multilabel rows are multi-hot.")
        return y.astype(np.int64)
    if y.shape != (n,):
        raise KitError(f"{name} has shape {y.shape}; expected ({n},): one class id per text.")
    if not np.issubdtype(y.dtype, np.integer):
        raise KitError(f"{name} must hold class ids 0..{num_labels - 1}, not {y.dtype} values.")
    bad = (y < 0) | (y >= num_labels)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise KitError(
            f"{name}[{i}] is {y[i]}; class ids must be in 0..{num_labels - 1} "
            f"(label_names has {num_labels} entries)."
        )
    return y.astype(np.int64)


def _training_finished(state: dict[str, Any], patience: int) -> bool:
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


def _check_cfg(cfg: TransformerParams, has_val: bool) -> None:
    if not 0 <= cfg.warmup_ratio < 1:
        raise KitError(
            f"transformer.warmup_ratio is {cfg.warmup_ratio}; use a fraction in [0, 1), e.g. 0.06."
        )
    if cfg.eval_steps < 1 or cfg.save_steps < 1:
        raise KitError(
            f"transformer.eval_steps ({cfg.eval_steps}) and save_steps ({cfg.save_steps}) must be "
            ">= 1."
        )
    if has_val and cfg.save_steps % cfg.eval_steps:
        suggestion = cfg.eval_steps * max(1, round(cfg.save_steps / cfg.eval_steps))
        raise KitError(
            f"transformer.save_steps ({cfg.save_steps}) must be a multiple of eval_steps "
            f"({cfg.eval_steps}) so that every checkpoint has a validation score and the best one "
            f"can be kept; e.g. set save_steps: {suggestion}."
        )
    if cfg.early_stopping_patience > 0 and not has_val:
        raise KitError(
            "transformer.early_stopping_patience > 0 needs validation texts to score; pass "
            "val_texts or set early_stopping_patience: 0."
        )
    if not 0 <= cfg.label_smoothing < 1:
        raise KitError(
            f"transformer.label_smoothing is {cfg.label_smoothing}; use a value in [0, 1), "
            "e.g. 0.1."
        )
    if cfg.epochs <= 0 and cfg.max_steps <= 0:
        raise KitError("Set transformer.epochs > 0 or transformer.max_steps > 0.")


def _hash_data(*parts: Any) -> str:
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


def _fingerprint(
    cfg: TransformerParams, seed: int, task: str, label_names: list[str], metric: str,
    train_texts: list[str], y_train: np.ndarray, val_texts: list[str], y_val: np.ndarray | None,
) -> dict[str, Any]:
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_FINGERPRINTED}
    return {
        "settings": {**settings, "seed": seed, "task": task, "label_names": list(label_names),
                     "metric": metric},
        "data": _hash_data(train_texts, y_train, val_texts, y_val),
    }


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = diff_params(old.get("settings", {}), new.get("settings", {}))
    if old.get("data") != new.get("data"):
        out.append("the training/validation texts or labels")
    return out


def _claim(checkpoint_root: Path, fingerprint: dict[str, Any]) -> None:
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
    _write_json_atomic(path, fingerprint)


def _load_finished(
    work_dir: Path, fingerprint: dict[str, Any], test_hash: str
) -> TransformerResult | None:
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
    if saved.get("test_hash") != test_hash:
        # Same training, other test texts: the finished checkpoint is reloaded, not retrained.
        print(f"The test texts differ from those predicted in {work_dir}: predicting them again "
              "with the trained model.")
        return None
    with np.load(work_dir / PREDICTIONS_FILE) as arrays:
        val_probs, test_probs = arrays["val_probs"], arrays["test_probs"]
    info = saved["result"]
    print(f"Transformer already trained in {work_dir} (step {info['global_step']}): loaded its "
          "saved predictions.")
    return TransformerResult(
        val_probs=val_probs,
        test_probs=test_probs,
        global_step=info["global_step"],
        max_steps=info["max_steps"],
        resumed_from_step=info["resumed_from_step"],
        history=json.loads((work_dir / "transformer_history.json").read_text()),
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


def _save_finished(
    work_dir: Path, result: TransformerResult, fingerprint: dict[str, Any], test_hash: str
) -> None:
    from kit.training_plots import plot_training_curves

    tmp = work_dir / f".{PREDICTIONS_FILE}.tmp.npz"
    np.savez(tmp, val_probs=result.val_probs, test_probs=result.test_probs)
    os.replace(tmp, work_dir / PREDICTIONS_FILE)
    _write_json_atomic(work_dir / "transformer_history.json", result.history)
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
    _write_json_atomic(work_dir / RESULT_FILE,
                       {"fingerprint": fingerprint, "test_hash": test_hash, "result": info})


def _export_model(
    trainer: Trainer, tokenizer: PreTrainedTokenizerBase, work_dir: Path, task: str,
    label_names: list[str], max_length: int, cfg: TransformerParams,
) -> Path:
    truncation_side = cfg.truncation_side
    target = work_dir / "model"
    if cfg.lora.enabled:
        # Adapter + head (or merged 16-bit weights) + tokenizer + labels: a folder an
        # internet-off Kaggle notebook loads with kit.export.load_exported.
        from kit.export import export_for_kaggle

        params = {"transformer": dataclasses.asdict(cfg), "task": task,
                  "max_length": int(max_length)}
        return export_for_kaggle(trainer.model, tokenizer, target, label_names, params,
                                 merge=cfg.lora.merge_on_export)
    staging = work_dir / ".model.staging"
    shutil.rmtree(staging, ignore_errors=True)
    trainer.save_model(str(staging))
    tokenizer.save_pretrained(str(staging))
    _write_json_atomic(staging / "label_map.json", {
        "task": task, "label_names": list(label_names), "max_length": int(max_length),
        "truncation_side": truncation_side,
    })
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    return target


def _write_json_atomic(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=1, default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
