"""Training step: one seeded hold-out split, then each model in `params.models`, same interface.

Every model ends as a `Predictions` (validation and test probabilities) in the run folder and a
metrics entry, so thresholds and the submission never care which model made them. A model whose
predictions already exist is not trained again (a rerun continues where the last one stopped).
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np
import pandas as pd

from kit.core.atomic import write_json
from kit.core.progress import show_progress
from kit.core.rundir import Predictions, RunDir
from kit.data.competition import Competition, render_texts
from kit.data.split import load_or_make_split
from kit.errors import KitError
from kit.evaluation import metrics
from kit.models.tfidf import PIPELINE_FILE, fit_predict_tfidf
from kit.tracking import Tracker, open_tracker

log = logging.getLogger(__name__)


def train_models(run: RunDir, comp: Competition) -> pd.DataFrame:
    """Train every model in params (skipping finished ones); return the validation table."""
    params = run.params
    train_rows, val_rows = load_or_make_split(run, comp)
    log.info("Split: %d train / %d validation rows (seed %d).", len(train_rows), len(val_rows),
             params.seed)
    metric = params.competition.metric
    tracker = open_tracker(run)  # MLflow when installed (tracking params); never stops a run
    for kind in params.models:
        if (run.predictions / f"{kind}.npz").exists() and kind in run.read_metrics().get(
                "models", {}):
            log.info(f"{kind}: already trained in this run; reusing its predictions.")
            continue
        show_progress(log, f"{kind}: training started")
        start = time.time()
        val_probs, test_probs, extra = _fit_one(kind, run, comp, train_rows, val_rows, tracker)
        preds = Predictions(kind, comp.train_ids[val_rows], val_probs, comp.test_ids, test_probs)
        run.save_predictions(preds)
        rep = metrics.report(comp.y[val_rows], val_probs, None, comp.task, metric)
        rep["train_seconds"] = round(time.time() - start, 1)
        run.update_metrics(models={kind: {**rep, **extra}})
        show_progress(log, f"{kind}: validation {metric} = {rep[metric]:.4f} "
                           f"({rep['train_seconds']} s)")
        tracker.log_metrics({f"{kind}/{'' if name.endswith('seconds') else 'val_'}{name}": value
                             for name, value in rep.items()})
    return summarize(run)


def _fit_one(kind: str, run: RunDir, comp: Competition, train_rows: np.ndarray,
             val_rows: np.ndarray, tracker: Tracker) -> tuple[np.ndarray, np.ndarray, dict]:
    params = run.params
    if kind == "tfidf":
        texts = comp.train_texts
        val, test = fit_predict_tfidf(
            [texts[i] for i in train_rows], comp.y[train_rows],
            [[texts[i] for i in val_rows], comp.test_texts],
            params.tfidf, comp.task, len(comp.labels), params.seed,
            save_to=run.models / "tfidf" / PIPELINE_FILE,
        )
        return val, test, {}
    if kind == "transformer":
        from kit.models.hf.train import train_transformer  # torch/transformers only when needed

        cfg = params.transformer
        eda = run.read_metrics().get("eda", {})
        if cfg.max_length is None and eda.get("token_unit") == cfg.model:
            # The EDA percentile was measured with this model's tokenizer: use it.
            cfg = dataclasses.replace(cfg, max_length=int(eda["suggested_max_length"]))
            log.info(f"max_length {cfg.max_length}: p{eda['max_length_percentile']:g} of the "
                  "training texts' token lengths (01_eda)")
        texts, test_texts = comp.train_texts, comp.test_texts
        if cfg.prompt_template:
            comp_params = dataclasses.replace(params.competition)
            texts = render_texts(comp.train, comp_params, "train", cfg.prompt_template)
            test_texts = render_texts(comp.test, comp_params, "test", cfg.prompt_template)
        result = train_transformer(
            [texts[i] for i in train_rows], comp.y[train_rows],
            [texts[i] for i in val_rows], comp.y[val_rows], test_texts,
            task=comp.task, label_names=comp.labels, cfg=cfg, seed=params.seed,
            work_dir=run.models / "transformer", metric=params.competition.metric,
            callbacks=tracker.callbacks("transformer"),
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
    raise KitError(f"Unknown model kind {kind!r}.")  # params validation makes this unreachable


def summarize(run: RunDir) -> pd.DataFrame:
    """Validation table of the trained models; records the best one in metrics.json."""
    m = run.read_metrics()
    metric = run.params.competition.metric
    table = pd.DataFrame(m.get("models", {})).T
    if table.empty:
        raise KitError("No model has been trained in this run yet; run 02_train first.")
    greater = metrics.get_metric(metric).greater_is_better
    best = table[metric].astype(float).idxmax() if greater else table[metric].astype(float).idxmin()
    run.update_metrics(metric=metric, best_model=best, validation=float(table.loc[best, metric]))
    return table


def training_curves(run: RunDir) -> object:
    """The transformer's loss/metric curves (PNG) for the notebook, or a note if there are none."""
    found = sorted(run.path.rglob("training_curves*.png"))
    if not found:
        return "No training curves: only models without a training loop ran (e.g. tfidf)."
    from IPython.display import Image

    return Image(filename=str(found[-1]))
