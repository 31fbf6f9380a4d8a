"""Fit one model kind on one fold's training rows; return its fold and test probabilities.

The one place that knows each model kind (TF-IDF, transformer): the training step and the
k-fold loop call `fit_model` per fold and never care which model it was.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from kit.core.atomic import write_json
from kit.core.rundir import RunDir
from kit.data.cache import token_cache_dir
from kit.data.competition import Competition, render_texts
from kit.data.folds import Fold
from kit.errors import KitError
from kit.models.tfidf import PIPELINE_FILE, fit_predict_tfidf
from kit.tracking import Tracker

log = logging.getLogger(__name__)


def model_dir(run: RunDir, kind: str, fold: Fold) -> Path:
    """`models/<kind>` for the hold-out model, `models/<kind>/<r0_f2>` for a fold's."""
    base = run.models / kind
    return base if fold.is_holdout else base / fold.tag


def persistent_checkpoint_dir(run: RunDir) -> str | None:
    """This run's transformer checkpoints under the platform's persistent folder (env.json)."""
    try:
        where = json.loads((run.path / "env.json").read_text()).get("where") or {}
    except (OSError, json.JSONDecodeError):
        return None
    root = where.get("checkpoint_dir")
    return str(Path(root) / run.params.name / "transformer") if root else None


def fit_model(kind: str, run: RunDir, comp: Competition, fold: Fold, tracker: Tracker,
              callbacks: list | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Train `kind` on `fold.train_rows`; probabilities on `fold.val_rows` and on test.

    `callbacks`: extra TrainerCallbacks for a transformer fit (a search's pruning).
    """
    if kind == "tfidf":
        return _fit_tfidf(run, comp, fold)
    if kind == "transformer":
        return _fit_transformer(run, comp, fold, tracker, callbacks or [])
    raise KitError(f"Unknown model kind {kind!r}.")  # params validation makes this unreachable


def _fit_tfidf(run: RunDir, comp: Competition,
               fold: Fold) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    params = run.params
    texts = comp.train_texts
    val, test = fit_predict_tfidf(
        [texts[i] for i in fold.train_rows], comp.y[fold.train_rows],
        [[texts[i] for i in fold.val_rows], comp.test_texts],
        params.tfidf, comp.task, len(comp.labels), params.seed,
        save_to=model_dir(run, "tfidf", fold) / PIPELINE_FILE,
    )
    return val, test, {}


def _fit_transformer(run: RunDir, comp: Competition, fold: Fold, tracker: Tracker,
                     callbacks: list) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    from kit.models.hf.train import train_transformer  # torch/transformers only when needed

    params = run.params
    cfg = params.transformer
    eda = run.read_metrics().get("eda", {})
    if cfg.max_length is None and eda.get("token_unit") == cfg.model:
        # The EDA percentile was measured with this model's tokenizer: use it.
        cfg = dataclasses.replace(cfg, max_length=int(eda["suggested_max_length"]))
        log.info(f"max_length {cfg.max_length}: p{eda['max_length_percentile']:g} of the "
                 "training texts' token lengths (01_eda)")
    checkpoints = cfg.checkpoint_dir or persistent_checkpoint_dir(run)
    if checkpoints:
        # Colab with Drive mounted, platform.checkpoint_dir, or transformer.checkpoint_dir: a
        # folder that survives the session; every fold keeps its own checkpoints there.
        checkpoints = checkpoints if fold.is_holdout else str(Path(checkpoints) / fold.tag)
        cfg = dataclasses.replace(cfg, checkpoint_dir=checkpoints)
        log.info(f"Checkpoints go to {checkpoints}")
    texts, test_texts = comp.train_texts, comp.test_texts
    if cfg.prompt_template:
        texts = render_texts(comp.train, params.competition, "train", cfg.prompt_template)
        test_texts = render_texts(comp.test, params.competition, "test", cfg.prompt_template)
    prefix = "transformer" if fold.is_holdout else f"transformer/{fold.tag}"
    result = train_transformer(
        [texts[i] for i in fold.train_rows], comp.y[fold.train_rows],
        [texts[i] for i in fold.val_rows], comp.y[fold.val_rows], test_texts,
        task=comp.task, label_names=comp.labels, cfg=cfg,
        seed=params.seed + max(fold.fold, 0) + 1000 * fold.repeat,
        work_dir=model_dir(run, "transformer", fold), metric=params.competition.metric,
        callbacks=[*tracker.callbacks(prefix), *callbacks],
        token_cache_dir=token_cache_dir(params, run.root, comp.data_info is not None,
                                        len(comp.train_texts)),
    )
    if not result.completed:
        raise KitError(
            f"Training stopped at step {result.global_step} of {result.max_steps}: "
            f"`transformer.time_budget_minutes` ({cfg.time_budget_minutes}) ran out. The "
            f"checkpoint is in {result.checkpoint_dir}; rerun the same command (same params "
            "and run name) to continue from it."
        )
    write_json(run.path / "hardware.json", result.hardware)
    extra = {"global_step": result.global_step, "max_length": result.max_length,
             "resumed_from_step": result.resumed_from_step,
             "best_step": result.best_step, "model_dir": str(result.model_dir)}
    if result.extra.get("load_report"):
        write_json(run.path / "llm_report.json", result.extra["load_report"], any_as_str=True)
        extra["memory_estimate_gb"] = result.extra["load_report"].get("memory_estimate_gb")
        extra["measured_peak_gb"] = result.extra["load_report"].get(
            "measured_peak_after_training_gb")
    return result.val_probs, result.test_probs, extra
