"""The fine-tuned transformer kind (encoder, or decoder LLM with LoRA): fit, export, load.

A fit trains through kit.models.hf.train (torch and transformers are imported only then) and
leaves the kit's one export format in `model/` (kit.models.export), which `load` reads back.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kit.config.params import Params, TransformerParams
from kit.core.atomic import write_json
from kit.core.rundir import RunDir
from kit.data.cache import token_cache_dir
from kit.data.competition import Competition, render_texts
from kit.data.folds import Fold
from kit.errors import KitError
from kit.models.kinds.base import FitOutput, LoadedModel, model_dir, persistent_checkpoint_dir
from kit.tracking import Tracker

if TYPE_CHECKING:
    from kit.models.distill.targets import DistillTargets

__all__ = ["TRANSFORMER", "TrainingRows", "TransformerKind"]

log = logging.getLogger(__name__)


@dataclass
class TrainingRows:
    """What one fit trains on: texts and labels, and a student's soft targets (with the pseudo-
    labelled rows it adds); `extra` goes into the model's metrics."""

    texts: list[str]
    labels: Any
    distill: DistillTargets | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class TransformerKind:
    """A Hugging Face sequence classifier fine-tuned with the kit's Trainer (resumable)."""

    name = "transformer"
    params_section = "transformer"
    artifact = "model"  # the export folder (kit.models.export)

    def fit(self, run: RunDir, comp: Competition, fold: Fold, tracker: Tracker,
            callbacks: list) -> FitOutput:
        from kit.models.hf.checkpoints import release_checkpoints
        from kit.models.hf.train import train_transformer  # torch/transformers only when needed

        params = run.params
        cfg = self.settings(params)
        state = run.state()
        resolved = state.resolved.get("transformer.max_length")
        if resolved is not None and cfg.max_length == resolved.value:
            log.info(f"max_length {cfg.max_length}: {resolved.source}")
        eda = state.eda
        if cfg.max_length is None and eda is not None and eda.token_unit == cfg.model:
            # A run folder from before the resolved params: its EDA summary still sets the length.
            cfg = dataclasses.replace(cfg, max_length=int(eda.suggested_max_length))
            log.info(f"max_length {cfg.max_length}: p{eda.max_length_percentile:g} of the "
                     "training texts' token lengths (01_eda)")
        work_dir = model_dir(run, self.name, fold)
        # models/transformer/r0_f2/s43 -> r0_f2/s43 (the refit: transformer_full/...)
        where = work_dir.relative_to(run.models).parts
        where = where[1:] if where[0] == self.name else where
        refit: dict[str, Any] = {}
        if fold.is_refit:
            from kit.models.hf.refit import refit_settings

            cfg, steps = refit_settings(cfg, run.models / self.name)
            refit = {"refit_steps": cfg.max_steps, "fold_best_steps": steps}
            log.info(f"Full-data refit on {len(fold.train_rows)} rows for {cfg.max_steps} steps: "
                     f"the mean best step of the {len(steps)} fold fits ({steps}).")
        checkpoints = cfg.checkpoint_dir or persistent_checkpoint_dir(run, self.name)
        if checkpoints:
            # Colab with Drive mounted, platform.checkpoint_dir, or transformer.checkpoint_dir: a
            # folder that survives the session; every fold (and seed) keeps its own checkpoints.
            checkpoints = str(Path(checkpoints).joinpath(*where))
            cfg = dataclasses.replace(cfg, checkpoint_dir=checkpoints)
            log.info(f"Checkpoints go to {checkpoints}")
        texts, test_texts = comp.train_texts, comp.test_texts
        if cfg.prompt_template:
            texts = render_texts(comp.train, params.competition, "train", cfg.prompt_template)
            test_texts = render_texts(comp.test, params.competition, "test", cfg.prompt_template)
        prefix = "/".join(work_dir.relative_to(run.models).parts)  # transformer/r0_f2
        seed = params.seed if fold.seed is None else fold.seed  # `seeds`: one fit per seed
        rows = self.training_rows(run, comp, fold, texts, test_texts)
        val_texts = [texts[i] for i in fold.val_rows]
        if cfg.swap_columns:  # a `swap` view: rows predicted in both orders (kit.data.pairs)
            val_texts, test_texts = _with_swapped(comp, params, cfg, fold, val_texts, test_texts)
        result = train_transformer(
            rows.texts, rows.labels,
            val_texts, comp.y[fold.val_rows], test_texts,
            task=comp.task, label_names=comp.labels, cfg=cfg,
            seed=seed + max(fold.fold, 0) + 1000 * fold.repeat,
            work_dir=work_dir, metric=params.competition.metric,
            callbacks=[*tracker.callbacks(prefix), *callbacks],
            token_cache_dir=token_cache_dir(params, run.root, comp.data_info is not None,
                                            len(comp.train_texts)),
            distill=rows.distill,
        )
        if not result.completed:
            raise KitError(
                f"Training stopped at step {result.global_step} of {result.max_steps}: "
                f"`transformer.time_budget_minutes` ({cfg.time_budget_minutes}) ran out. The "
                f"checkpoint is in {result.checkpoint_dir}; rerun the same command (same params "
                "and run name) to continue from it."
            )
        # Predictions and export are saved (train_transformer's result file): the checkpoints go,
        # here or in the persistent folder, so k-fold holds one fold's checkpoints at a time.
        release_checkpoints(result.checkpoint_dir, keep=cfg.keep_checkpoints)
        write_json(run.path / "hardware.json", result.hardware)
        extra = {"global_step": result.global_step, "max_length": result.max_length, **refit,
                 "resumed_from_step": result.resumed_from_step,
                 "best_step": result.best_step, "model_dir": str(result.model_dir),
                 **rows.extra}
        if result.extra.get("view_scores"):  # each test-time view's validation score
            scores = result.extra["view_scores"]
            extra["view_scores"] = scores if fold.is_holdout else {fold.tag: scores}
        if result.extra.get("load_report"):
            write_json(run.path / "llm_report.json", result.extra["load_report"], any_as_str=True)
            extra["memory_estimate_gb"] = result.extra["load_report"].get("memory_estimate_gb")
            extra["measured_peak_gb"] = result.extra["load_report"].get(
                "measured_peak_after_training_gb")
        return result.val_probs, result.test_probs, extra

    def settings(self, params: Params) -> TransformerParams:
        """The section this kind trains with (a student merges its own keys over it)."""
        return params.transformer

    def training_rows(self, run: RunDir, comp: Competition, fold: Fold, texts: Any,
                      test_texts: Any) -> TrainingRows:
        """The fold's training rows as rendered `texts`, and their labels (a student adds soft
        targets and pseudo-labelled rows, kit.models.kinds.student)."""
        return TrainingRows([texts[i] for i in fold.train_rows], comp.y[fold.train_rows])

    def load(self, folder: Path, params: Params, model_dir: Path, device: str | None,
             labels: list[str] | None, backend: str = "auto") -> LoadedModel:
        from kit.models.export import EXPORT_INFO, load_exported
        from kit.models.onnx_export import choose_backend, load_onnx_export

        export = model_dir / self.artifact
        if not (export / EXPORT_INFO).is_file():
            raise KitError(
                f"No transformer export at {export} ({EXPORT_INFO} missing): the run did not "
                "finish training. Finish 02_train, or serve with `submit.model: tfidf`."
            )
        info = json.loads((export / EXPORT_INFO).read_text())
        backend = choose_backend(export, backend, device)
        model, tokenizer, labels = (load_exported(export, device=device) if backend == "torch"
                                    else load_onnx_export(export, backend))
        from kit.models.hf.data import set_truncation_side
        from kit.models.hf.views import ViewPlan, predict_with_views

        set_truncation_side(tokenizer, info.get("truncation_side", "right"))
        plan = ViewPlan.from_export(info)  # the cut training used, and the test-time views
        task = info.get("task", params.competition.task)
        cfg = self.settings(params)
        max_length = int(info.get("max_length") or cfg.max_length or 512)
        dev = next(model.parameters()).device
        amp = _autocast_dtype() if dev.type == "cuda" else None
        batch_size = cfg.eval_batch_size

        def predict(texts: list[str]) -> np.ndarray:  # length-sorted batches, input order back
            return predict_with_views(plan, model, tokenizer, texts, batch_size=batch_size,
                                      max_length=max_length, task=task, autocast_dtype=amp)

        template = cfg.prompt_template or params.competition.text_template
        return LoadedModel(predict, list(labels), str(dev), task, template, backend,
                           plan.swap_columns)

    def after_folds(self, run: RunDir, comp: Competition, test_probs: np.ndarray) -> dict:
        """02's end of a k-fold LoRA run with `transformer.merge_folds`: the fold adapters
        merged into one model (kit.models.fold_merge), compared on test with the folds' mean
        (`test_probs`); what metrics.json records of it."""
        cfg = self.settings(run.params)
        if not cfg.merge_folds:
            return {}
        import time

        from kit.models.fold_merge import merge_report, merge_run_folds

        out = merge_run_folds(run.path, kind=self.name)
        model = self.load(run.path, run.params, out.parent, None, comp.labels)
        texts = _test_texts(comp, run.params, cfg)
        started = time.perf_counter()
        merged = model.predict(texts)
        report = merge_report(merged, test_probs, comp.task)
        report["predict_seconds"] = round(time.perf_counter() - started, 2)
        log.info("merged folds vs the folds' mean on test: max abs difference %.4f, "
                 "agreement %.3f (%d rows, %.1f s)", report["max_abs_diff"],
                 report["agreement"], report["rows"], report["predict_seconds"])
        return {"merged_folds": {"export": str(out.relative_to(run.path)), **report}}


def _test_texts(comp: Competition, params: Params, cfg: TransformerParams) -> list[str]:
    """The test texts as this run's transformer (settings `cfg`) predicts them (template, swap
    pairs)."""
    if cfg.swap_columns:
        from kit.data.pairs import render_pairs

        return render_pairs(comp.test, params.competition, "test", cfg.prompt_template,
                            cfg.swap_columns)
    if cfg.prompt_template:
        return render_texts(comp.test, params.competition, "test", cfg.prompt_template)
    return list(comp.test_texts)


def _with_swapped(comp: Competition, params: Params, cfg: TransformerParams, fold: Fold,
                  val_texts: list[str], test_texts: Any) -> tuple[list[str], list[str]]:
    """Validation and test texts carrying their swapped renderings (the `swap` view)."""
    from kit.data.pairs import pair_texts, swapped_template
    from kit.data.texts import template_of

    comp_params = params.competition
    swapped = swapped_template(template_of(comp_params, cfg.prompt_template), cfg.swap_columns)
    train = render_texts(comp.train, comp_params, "train", swapped)
    test = render_texts(comp.test, comp_params, "test", swapped)
    return (pair_texts(val_texts, [train[i] for i in fold.val_rows]),
            pair_texts(list(test_texts), test))


def _autocast_dtype() -> Any:
    """The precision training predicted with on this GPU (bf16 from sm_80, else fp16)."""
    import torch

    from kit.models.hardware import detect_hardware

    profile = detect_hardware()
    return torch.bfloat16 if profile.bf16 else torch.float16 if profile.fp16 else None


TRANSFORMER = TransformerKind()
