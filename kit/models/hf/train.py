"""Fine-tune a Hugging Face classifier with `Trainer` so that a killed session resumes exactly.

`train_transformer(...)` trains, checkpoints, evaluates and predicts. Calling it again with the
same arguments and `work_dir`:
- after it finished: returns the saved result (no training; kit.models.hf.resume);
- after a kill, a crash or a time-budget stop: resumes from the latest *complete* checkpoint
  (weights, optimizer, scheduler, grad scaler, RNG states, data order, early-stopping counter,
  best metric) and ends with the same model and predictions as an uninterrupted run.

Its named steps, in order: `check_training_texts` (kit.models.hf.inputs), `load_and_tokenize`,
`build_trainer`, `resume_or_train`, `predict_val_and_test`, then the export.

The pieces (PITFALLS.md "Resume after a killed session"): atomic checkpoints and rotation
(kit.models.hf.checkpoints), a per-epoch seeded length-grouped sampler and the weighted loss
(kit.models.hf.trainer), the time budget (kit.models.hf.budget).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from transformers import EarlyStoppingCallback, TrainerCallback, set_seed
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_callback import TrainerState

from kit.config.params import TransformerParams
from kit.errors import KitError
from kit.models.hf import budget, distributed
from kit.models.hf.checkpoints import STAGING, checkpoint_step, complete_checkpoints
from kit.models.hf.data import (
    head_tail_tokens,
    logits_to_probs,
    make_collator,
    model_max_length,
    set_truncation_side,
    suggest_max_length,
    tokenize_texts,
)
from kit.models.hf.inputs import TrainingTexts, check_training_texts
from kit.models.hf.loading import load_classifier
from kit.models.hf.options import training_options
from kit.models.hf.progress import TextProgress, use_text_progress
from kit.models.hf.resume import (
    TransformerResult,
    claim,
    hash_data,
    load_finished,
    make_fingerprint,
    save_finished,
    training_finished,
)
from kit.models.hf.trainer import KitTrainer, class_weight_vector
from kit.models.hf.views import (
    RECORD_KEY,
    ViewPlan,
    check_view_texts,
    plan_views,
    predict_with_views,
    view_scores,
)

if TYPE_CHECKING:
    from kit.models.distill.targets import DistillTargets

__all__ = ["TransformerResult", "train_transformer"]

log = logging.getLogger(__name__)


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
    callbacks: list[TrainerCallback] | None = None,
    token_cache_dir: Path | None = None,
    distill: DistillTargets | None = None,
) -> TransformerResult:
    """Fine-tune `cfg.model` on the training texts; resume or return the saved result if rerun.

    Validation (if given) is scored with `metric` every `cfg.eval_steps`, picks the best
    checkpoint (loaded at the end) and drives early stopping. Returns validation and test
    probabilities in the kit's conventions, from the best model. `callbacks` watch training
    (e.g. kit.tracking's metric logger). `token_cache_dir`: tokenised texts are cached there
    (memory-mapped Arrow, kit.models.hf.token_cache) and reused by reruns. `distill`: a
    student's soft targets, one teacher probability row per training text (kit.models.hf.distill).
    """
    started = budget.now()
    from kit.models.hardware import detect_hardware, pin_single_gpu

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    data = check_training_texts(train_texts, train_labels, val_texts, val_labels, test_texts,
                                task=task, label_names=label_names, metric=metric, cfg=cfg,
                                distill=distill)
    check_view_texts(cfg, data.val_texts, data.test_texts)  # before training, not after

    checkpoint_root = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else work_dir / "checkpoints"
    # In a DDP rank: the job's processes; else as many as this call would launch.
    launched = distributed.launched_world_size()
    processes = launched if launched > 1 else distributed.processes_for(
        cfg.distributed, distributed.visible_gpus())
    fingerprint = make_fingerprint(cfg, seed, task, label_names, metric, data.train_texts,
                                   data.y_train, data.val_texts, data.y_val, processes=processes)
    if distill is not None:  # other soft targets, alpha or T: another training
        fingerprint["settings"]["distill"] = distill.fingerprint()
    test_hash = hash_data(data.test_texts)
    done = load_finished(work_dir, fingerprint, test_hash, data.test_texts,
                         cfg.eval_batch_size)
    if done is not None:
        return done
    if processes > 1 and launched == 1:
        # `callbacks` (e.g. a tracking client) stay here; they get the ranks' logs afterwards.
        call = dict(train_texts=data.train_texts, train_labels=train_labels,
                    val_texts=data.val_texts, val_labels=val_labels, test_texts=data.test_texts,
                    task=task, label_names=list(label_names), cfg=cfg, seed=seed,
                    work_dir=work_dir, metric=metric, distill=distill)
        result = distributed.launch_training(call, work_dir, processes)
        distributed.replay_logs(callbacks or [], result.history)
        return result
    claim(checkpoint_root, fingerprint)

    profile = pin_single_gpu(detect_hardware())
    set_seed(seed)  # the classification head's initialisation depends on it
    prepared = load_and_tokenize(cfg, data, task, label_names, profile, token_cache_dir)
    trainer, time_budget = build_trainer(cfg, prepared, data, task=task, metric=metric,
                                         seed=seed, checkpoint_root=checkpoint_root,
                                         callbacks=callbacks, started=started)
    resumed_from, train_seconds = resume_or_train(trainer, checkpoint_root, cfg)
    state = trainer.state
    completed = time_budget.stopped_at is None
    if not completed:
        log.warning(
            f"Stopped at step {state.global_step} of {state.max_steps} to stay within "
            f"transformer.time_budget_minutes={cfg.time_budget_minutes:g}; the checkpoint is in "
            f"{checkpoint_root}. Run the same call again (same work_dir, e.g. rerun the notebook "
            "or the cell) to continue from there; predictions below come from the best model so "
            "far."
        )
    plan = plan_views(cfg, prepared.max_length, label_names)
    per_view: dict[str, np.ndarray] = {}
    val_probs, test_probs = predict_val_and_test(trainer.model, prepared, data, cfg, task,
                                                 token_cache_dir, plan, per_view)
    result = TransformerResult(
        val_probs=val_probs,
        test_probs=test_probs,
        global_step=int(state.global_step),
        max_steps=int(state.max_steps),
        resumed_from_step=resumed_from,
        history=list(state.log_history),
        model_dir=None,
        max_length=int(prepared.max_length),
        hardware=profile.to_dict(),
        completed=completed,
        best_metric=None if state.best_metric is None else float(state.best_metric),
        best_step=(checkpoint_step(state.best_model_checkpoint)
                   if state.best_model_checkpoint else None),
        checkpoint_dir=checkpoint_root,
        train_seconds=float(train_seconds),
        extra={"load_report": prepared.load_report} if prepared.load_report else {},
    )
    if len(per_view) > 1 and data.has_val:
        result.extra["view_scores"] = view_scores(per_view, val_probs, data.y_val, metric, task)
    if trainer.save_timings:
        result.extra["checkpoint_saves"] = [dataclasses.asdict(t) for t in trainer.save_timings]
    if prepared.load_report:
        from kit.models.llm.memory_peak import measured_peak_gb

        prepared.load_report["measured_peak_after_training_gb"] = measured_peak_gb(
            profile.device)
    if completed and distributed.is_main_process():  # under DDP: rank 0 writes
        result.model_dir = _export_model(trainer, prepared.tokenizer, work_dir, task,
                                         label_names, prepared.max_length, cfg, plan)
        save_finished(work_dir, result, fingerprint, test_hash)
    return result


@dataclass
class Prepared:
    """The loaded model and tokenizer and the tokenised texts, at the length training uses."""

    model: Any
    tokenizer: Any
    profile: Any  # kit.models.hardware.HardwareProfile
    load_report: dict[str, Any]
    max_length: int
    head_tokens: int | None
    train_ds: Any
    val_ds: Any


def load_and_tokenize(cfg: TransformerParams, data: TrainingTexts, task: str,
                      label_names: list[str], profile: Any,
                      token_cache_dir: Path | None) -> Prepared:
    """Step 1: the model and tokenizer, `max_length` (given, or the 99th percentile), tokens."""
    load_report: dict[str, Any] = {}
    model, tokenizer = load_classifier(cfg, data.num_labels, task, label_names, profile,
                                       report=load_report)
    set_truncation_side(tokenizer, cfg.truncation_side)
    limit = model_max_length(tokenizer, getattr(model, "config", None))
    # The percentile from at most ~20k texts: as good, and no second full tokenisation pass.
    sample = data.train_texts[:: max(1, len(data.train_texts) // 20_000)]
    max_length = cfg.max_length or suggest_max_length(tokenizer, sample, 99.0, limit=limit)
    if max_length > limit:
        raise KitError(
            f"transformer.max_length is {max_length}, but {cfg.model} accepts at most {limit} "
            f"tokens. Set transformer.max_length <= {limit} (or null to derive it from the data)."
        )
    head = head_tail_tokens(cfg.truncation_side, cfg.head_tokens, max_length)
    train_ds = tokenize_texts(tokenizer, data.train_texts, max_length, data.y_train, task,
                              head_tokens=head, cache_dir=token_cache_dir)
    if data.distill is not None:
        train_ds.teacher_probs = data.distill.probs.astype(np.float32)
    val_ds = (tokenize_texts(tokenizer, data.val_texts, max_length, data.y_val, task,
                             head_tokens=head, cache_dir=token_cache_dir)
              if data.has_val else None)
    return Prepared(model, tokenizer, profile, load_report, max_length, head, train_ds, val_ds)


def build_trainer(cfg: TransformerParams, prepared: Prepared, data: TrainingTexts, *, task: str,
                  metric: str, seed: int, checkpoint_root: Path,
                  callbacks: list[TrainerCallback] | None,
                  started: float) -> tuple[KitTrainer, budget.TimeBudget]:
    """Step 2: the KitTrainer with the run's arguments, metric, time budget and progress."""
    from kit.evaluation.metrics import get_metric, score
    from kit.models.hardware import SingleGpuTrainingArguments, training_precision_kwargs
    from kit.models.llm.lora import (
        resolve_optimizer,  # 8-bit/paged optimizers fall back without bitsandbytes
    )

    profile, has_val = prepared.profile, data.has_val
    optim, notice = resolve_optimizer(cfg.optimizer, profile)
    if notice:
        log.info(notice)

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
        greater_is_better=get_metric(metric).greater_is_better if has_val else None,
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
        disable_tqdm=True,  # progress is TextProgress's text lines: no bar, no HTML widget
        **training_precision_kwargs(profile),
    )
    time_budget = budget.TimeBudget(
        cfg.time_budget_minutes * 60 if cfg.time_budget_minutes else None, started
    )
    progress = TextProgress()
    callbacks = [time_budget, progress, *(callbacks or [])]
    if cfg.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience))
    tokenizer = prepared.tokenizer
    trainer = KitTrainer(
        model=prepared.model,
        args=args,
        train_dataset=prepared.train_ds,
        eval_dataset=prepared.val_ds,
        data_collator=make_collator(tokenizer),
        processing_class=tokenizer,
        compute_metrics=compute_metrics if has_val else None,
        callbacks=callbacks,
        task=task,
        class_weights=class_weight_vector(data.y_train, data.num_labels, task,
                                          cfg.class_weights),
        label_smoothing=cfg.label_smoothing,
        train_lengths=prepared.train_ds.lengths,
        keep_last=cfg.save_total_limit,
        disk_budget_gb=cfg.disk_budget_gb,
        options=training_options(cfg, prepared.model),
        checkpoint_fsync=cfg.checkpoint_fsync,
        distill=None if data.distill is None else (data.distill.alpha,
                                                   data.distill.temperature),
    )
    use_text_progress(trainer, progress)
    return trainer, time_budget


def resume_or_train(trainer: KitTrainer, checkpoint_root: Path,
                    cfg: TransformerParams) -> tuple[int | None, float]:
    """Step 3: train from the latest complete checkpoint (or the start); (resumed step, seconds)."""
    shutil.rmtree(checkpoint_root / STAGING, ignore_errors=True)  # a save cut short earlier
    checkpoints = complete_checkpoints(checkpoint_root)
    resume = checkpoints[-1] if checkpoints else None
    resumed_from = None
    finished = False
    if resume is not None:
        saved_state = json.loads((resume / TRAINER_STATE_NAME).read_text())
        resumed_from = int(saved_state["global_step"])
        finished = training_finished(saved_state, cfg.early_stopping_patience)
        log.info(f"resumed from step {resumed_from} of {saved_state['max_steps']} ({resume})"
              + ("; training had already finished there" if finished else ""))
    t_train = budget.now()
    if finished:
        # Trainer would train on: early stopping's decision is not a resumable state (control
        # flags are reset when training begins). Load what the finished run ended with instead.
        trainer.state = TrainerState.load_from_json(str(resume / TRAINER_STATE_NAME))
        best = trainer.state.best_model_checkpoint
        trainer.load_trained(best if best and Path(best).is_dir() else str(resume))
    else:
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    return resumed_from, budget.now() - t_train


def predict_val_and_test(model: Any, prepared: Prepared, data: TrainingTexts,
                         cfg: TransformerParams, task: str, token_cache_dir: Path | None,
                         plan: ViewPlan, per_view: dict[str, np.ndarray] | None = None,
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Step 4: validation and test probabilities from the trained (best) model, each the mean
    over the test-time views (kit.models.hf.views); `per_view` gets validation's per view."""
    profile = prepared.profile
    amp = torch.bfloat16 if profile.bf16 else torch.float16 if profile.fp16 else None
    # Per view only in one process: under DDP a rank sees its share of the rows.
    per_view = per_view if distributed.launched_world_size() == 1 else None

    def predict(texts: list[str], desc: str, views: dict | None = None) -> np.ndarray:
        # Under DDP each rank predicts a share; the probabilities come back in input order.
        return distributed.predict_probs_gathered(
            lambda share: predict_with_views(
                plan, model, prepared.tokenizer, share, batch_size=cfg.eval_batch_size,
                max_length=prepared.max_length, task=task, autocast_dtype=amp, progress=True,
                desc=desc, cache_dir=token_cache_dir, per_view=views),
            texts)

    return (predict(data.val_texts, "predict validation", per_view),
            predict(data.test_texts, "predict test"))


def _export_model(
    trainer: Any, tokenizer: Any, work_dir: Path, task: str, label_names: list[str],
    max_length: int, cfg: TransformerParams, plan: ViewPlan,
) -> Path:
    """The trained model in the kit's one export format (kit.models.export), for every model."""
    from kit.models.export import export_for_kaggle  # peft: only once training is done

    params = {"transformer": dataclasses.asdict(cfg), "task": task, "max_length": int(max_length),
              "head_tokens": head_tail_tokens(cfg.truncation_side, cfg.head_tokens, max_length),
              RECORD_KEY: plan.to_record()}
    return export_for_kaggle(trainer.model, tokenizer, work_dir / "model", label_names, params,
                             merge=cfg.lora.enabled and cfg.lora.merge_on_export)
