"""The kit's `Trainer`: weighted/smoothed loss, a resumable length-grouped sampler, atomic
checkpoints with rotation by count and disk budget, and the options of kit.models.hf.options
(layer-wise learning rates, a weight EMA saved in each checkpoint, adversarial steps)."""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias
from transformers import Trainer
from transformers.trainer import TRAINER_STATE_NAME

from kit.core.atomic import fsync_dir, fsync_tree
from kit.errors import KitError
from kit.models.hf.checkpoints import (
    STAGING,
    disk_full_message,
    is_disk_full,
    rotate_checkpoints,
    write_marker,
)
from kit.models.hf.data import EpochSeededLengthGroupedSampler
from kit.models.hf.distill import distillation_loss
from kit.models.hf.ema import EmaCallback
from kit.models.hf.llrd import layerwise_param_groups
from kit.models.hf.options import TrainingOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SaveTiming:
    """One checkpoint save: its step, seconds in all, and the seconds of them spent in fsync."""

    step: int
    seconds: float
    fsync_seconds: float


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


class KitTrainer(Trainer):
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
        options: TrainingOptions | None = None,
        checkpoint_fsync: bool = True,
        distill: tuple[float, float] | None = None,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.distill = distill  # (alpha, temperature): rows with `teacher_probs` mix in the KL
        self.options = options or TrainingOptions()
        if self.options.ema is not None:
            self.add_callback(EmaCallback(self.options.ema))
        self._adversarial_loss = torch.zeros(())
        self._adversarial_batches = 0
        self.task = task
        self.class_weights = None if class_weights is None else torch.tensor(class_weights)
        self.label_smoothing = float(label_smoothing)
        self.train_lengths = train_lengths
        self.keep_last = max(1, int(keep_last))
        self.disk_budget_bytes = float(disk_budget_gb) * 1024**3
        self._staging_root: Path | None = None
        self._warned_budget = False
        self.checkpoint_fsync = bool(checkpoint_fsync)
        self.save_timings: list[SaveTiming] = []
        self._last_fsync_seconds = 0.0

    # -- data order ---------------------------------------------------------------------------
    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler:
        # `train_sampling_strategy="group_by_length"` is set in the arguments (so evaluation is
        # grouped by Trainer itself); training swaps in the resumable, per-epoch seeded version.
        # Under DDP the groups are cut for the global batch, which accelerate deals out to the
        # ranks one per-device batch each: the same order as one process with the whole batch.
        batch = (self.args.train_batch_size * self.args.gradient_accumulation_steps
                 * self.args.world_size)
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return EpochSeededLengthGroupedSampler(batch, self.train_lengths, seed)

    # -- optimizer: layer-wise learning rates -------------------------------------------------
    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        if self.options.llrd is None or self.optimizer is not None:
            return super().create_optimizer(model)
        from transformers.trainer_optimizer import is_optimizer_factory

        opt_model = self.model if model is None else model
        optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        if is_optimizer_factory(optimizer_cls) or {"params", "model", "optimizer_dict"} & set(
                kwargs):
            raise KitError(
                f"transformer.llrd needs an optimizer that takes parameter groups; "
                f"{self.args.optim} builds its own. Use adamw_torch (or adamw_8bit), or llrd: null."
            )
        groups = layerwise_param_groups(opt_model, self.args.learning_rate, self.options.llrd,
                                        self.args.weight_decay,
                                        self.get_decay_parameter_names(opt_model))
        self.optimizer = optimizer_cls(groups, **kwargs)
        return self.optimizer

    # -- adversarial step -------------------------------------------------------------------
    def training_step(
        self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None,
    ) -> torch.Tensor:
        adversary = self.options.adversary
        if adversary is None or not adversary.active(self.state.epoch):
            return super().training_step(model, inputs, num_items_in_batch)
        inner = self.accelerator.unwrap_model(model)
        trainable = [p for p in inner.parameters() if p.requires_grad]
        earlier = None
        if adversary.replaces_gradient:  # AWP: keep only the earlier micro-batches' gradients
            earlier = [None if p.grad is None else p.grad.detach().clone() for p in trainable]
        loss = super().training_step(model, inputs, num_items_in_batch)
        with adversary.perturbed(inner):
            if earlier is not None:
                for p, grad in zip(trainable, earlier, strict=True):
                    p.grad = grad
            adversarial = super().training_step(model, inputs, num_items_in_batch)
        self._adversarial_loss = (self._adversarial_loss.to(adversarial.device)
                                  + adversarial * self.current_gradient_accumulation_steps)
        self._adversarial_batches += 1
        return loss  # the clean loss: comparable with runs without the adversary

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._adversarial_batches:
            logs["adversarial_loss"] = float(self._adversarial_loss) / self._adversarial_batches
            self._adversarial_loss = torch.zeros(())
            self._adversarial_batches = 0
        super().log(logs, start_time)

    # -- weight EMA -------------------------------------------------------------------------
    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        ema = self.options.ema
        if ema is None:
            return super().evaluate(*args, **kwargs)
        with ema.applied(self.model):  # scores, the best checkpoint, early stopping: the average
            return super().evaluate(*args, **kwargs)

    def train(self, *args: Any, **kwargs: Any) -> Any:
        output = super().train(*args, **kwargs)
        if self.options.ema is not None:
            self.options.ema.copy_to(self.model)  # predictions and the export use the average
        return output

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        if self.options.ema is not None:
            self.options.ema.load(resume_from_checkpoint, self.model)

    def _load_best_model(self) -> None:
        super()._load_best_model()
        if self.options.ema is not None:
            self.options.ema.load(self.state.best_model_checkpoint, self.model)

    def load_trained(self, checkpoint: str) -> None:
        """Load the weights a finished run ended with (the average, with EMA), not training."""
        self._load_from_checkpoint(checkpoint)
        if self.options.ema is not None:
            self.options.ema.copy_to(self.model)

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
        teacher = inputs.pop("teacher_probs", None)  # a student's training batch
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
        if teacher is not None and self.distill is not None:
            loss = distillation_loss(loss, logits, teacher.to(logits.device), *self.distill,
                                     self.task)
        return (loss, outputs) if return_outputs else loss

    # -- atomic checkpoints -------------------------------------------------------------------
    def _get_output_dir(self, trial: Any) -> str:
        if self._staging_root is not None:
            return str(self._staging_root)
        return super()._get_output_dir(trial)

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        started = time.perf_counter()
        run_dir = Path(super()._get_output_dir(trial))
        step = self.state.global_step
        staging_root = run_dir / STAGING
        main = self.args.should_save  # rank 0 (or the only process) owns the folders
        try:
            self._save_staged(model, trial, run_dir, staging_root, step, main)
        except Exception as exc:
            # A full disk: the staged half goes (the previous checkpoint was never touched), and
            # the message says where, how much is free and what to do; the rerun resumes.
            if not is_disk_full(exc, run_dir):
                raise
            shutil.rmtree(staging_root, ignore_errors=True)
            raise KitError(disk_full_message(run_dir, step, self.keep_last)) from exc
        self.accelerator.wait_for_everyone()  # nobody reads or stages until it is complete
        self.save_timings.append(SaveTiming(step, time.perf_counter() - started,
                                            self._last_fsync_seconds))

    def _save_staged(self, model: torch.nn.Module, trial: Any, run_dir: Path, staging_root: Path,
                     step: int, main: bool) -> None:
        if main:
            shutil.rmtree(staging_root, ignore_errors=True)
            staging_root.mkdir(parents=True)
        self.accelerator.wait_for_everyone()
        self._staging_root = staging_root
        try:
            # Trainer writes weights, optimizer, scheduler, scaler, RNG (one file per rank under
            # DDP) and trainer state into <staging>/checkpoint-N; its rotation is off.
            super()._save_checkpoint(model, trial)
        finally:
            self._staging_root = None
        self.accelerator.wait_for_everyone()  # every rank's RNG state is in the staged folder
        staged = staging_root / f"checkpoint-{step}"
        best = self.state.best_model_checkpoint
        if best is not None and Path(best).parent == staging_root:
            # The best is this very checkpoint: record its final path, not the staging one.
            self.state.best_model_checkpoint = str(run_dir / Path(best).name)
            if main:
                self.state.save_to_json(str(staged / TRAINER_STATE_NAME))
        if main:
            self._complete_checkpoint(run_dir, staged, staging_root, step)

    def _complete_checkpoint(self, run_dir: Path, staged: Path, staging_root: Path,
                             step: int) -> None:
        if self.options.ema is not None:
            self.options.ema.save(staged)  # training state: in the checkpoint before its marker
        # Last file in: the sizes (and small files' hashes) resume checks the checkpoint against.
        write_marker(staged, step, self.state.max_steps)
        flushed = 0.0
        if self.checkpoint_fsync:  # on disk before the rename makes it count: a crash-safe save
            flushed = time.perf_counter()
            fsync_tree(staged)
            flushed = time.perf_counter() - flushed
        final = run_dir / f"checkpoint-{step}"
        if final.exists():
            shutil.rmtree(final)
        os.replace(staged, final)  # atomic on one filesystem: complete or absent
        if self.checkpoint_fsync:
            fsync_dir(run_dir)
        shutil.rmtree(staging_root, ignore_errors=True)
        self._rotate(run_dir)
        self._last_fsync_seconds = flushed

    def _rotate(self, run_dir: Path) -> None:
        best = self.state.best_model_checkpoint
        total = rotate_checkpoints(run_dir, self.keep_last, Path(best) if best else None,
                                   self.disk_budget_bytes)
        if total > self.disk_budget_bytes and not self._warned_budget:
            self._warned_budget = True
            log.warning(
                "Checkpoints in %s take %.2f GB, above transformer.disk_budget_gb=%g, even with "
                "only the latest and the best kept. Raise the budget or free disk space.",
                run_dir, total / 1024**3, self.disk_budget_bytes / 1024**3,
            )
