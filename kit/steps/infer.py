"""Inference step (05_infer): the attached model and rule predict test, within the time limit.

For code competitions: the notebook runs on Kaggle with the internet off, the offline dataset
(`python -m kit package`) attached. It finds the packaged run there (`<input>/**/run/`), loads
its chosen model and decision rule exactly as `kit serve` does (kit.serve.Predictor; on a CPU
the export's ONNX files when `kit export --onnx` wrote them), times a
sample of the test texts spread over their lengths, and stops with advice when the whole test
set would not fit in `kaggle.time_limit_hours`; otherwise it predicts all of test in
length-sorted batches and writes `submission.csv` (also into the platform's working dir, where
Kaggle scores it).
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kit.core import platform
from kit.core.rundir import RunDir
from kit.data.competition import Competition
from kit.errors import KitError
from kit.submission.build import build_submission, validate_submission
from kit.submission.store import save_submission

log = logging.getLogger(__name__)

SAFETY = 0.85  # stop when the estimate passes this share of the limit: Kaggle kills at 100 %


@dataclass
class InferResult:
    """What 05_infer shows: the submission, where the model came from, the timing."""

    submission: pd.DataFrame
    file: Path
    model_run: Path
    model: str
    seconds_per_text: float
    estimated_hours: float
    limit_hours: float
    backend: str = "torch"  # what ran the model: sklearn, torch, onnx, onnx-int8


def find_model_run(run: RunDir, where: str | Path | None = None) -> Path:
    """The packaged run to predict with: `where`, else one under the inputs, else this run."""
    if where:
        return Path(where)
    roots = [Path(run.params.platform.input_dir)] if run.params.platform.input_dir else []
    roots.append(platform.kaggle_input())
    for root in roots:
        found = sorted(p.parent for p in root.glob("**/run/params.yaml")) if root.is_dir() else []
        if found:
            if len(found) > 1:
                log.warning("Several packaged runs under %s; using %s", root, found[0])
            return found[0]
    return run.path


def sample_indices(lengths: list[int], k: int) -> np.ndarray:
    """`k` positions spread evenly over the texts sorted by length (short to long)."""
    order = np.argsort(lengths, kind="stable")
    picks = np.linspace(0, len(order) - 1, num=min(k, len(order))).round().astype(int)
    return order[np.unique(picks)]


def advice(estimated: float, limit: float, n: int, model: str) -> str:
    return (
        f"Predicting {n} test texts with {model} would take about {estimated:.1f} h, past "
        f"{SAFETY:.0%} of the {limit:g} h limit (kaggle.time_limit_hours); stopped before "
        "Kaggle kills the notebook. Fix: a larger batch if memory allows "
        "(transformer.eval_batch_size) or a shorter transformer.max_length; export merged "
        "weights (merge=True) instead of an adapter; fewer folds or models; or a T4 x2 / "
        "faster accelerator (kaggle.accelerator).")


def predict_test(run: RunDir, comp: Competition, model_run: str | Path | None = None,
                 sample_size: int = 64, backend: str = "auto") -> InferResult:
    """Predict `comp`'s test set with the packaged run; stop early when it would not fit.

    `backend`: as `kit predict --backend`; auto takes the export's ONNX files (int8 first) on a
    CPU when `kit export --onnx` wrote them, PyTorch otherwise.
    """
    from kit.serve.predictor import Predictor  # loads torch only when a transformer is used

    started = time.monotonic()
    folder = find_model_run(run, model_run)
    log.info("Loading the model of %s", folder)
    predictor = Predictor.load(folder, backend=backend)
    texts = predictor.render(comp.test, run.params.competition.test_file)
    limit = run.params.kaggle.time_limit_hours
    sample = sample_indices([len(t) for t in texts], sample_size)
    tic = time.monotonic()
    predictor.raw_probs([texts[i] for i in sample])
    per_text = (time.monotonic() - tic) / max(len(sample), 1)
    spent = time.monotonic() - started
    estimated = (spent + per_text * len(texts)) / 3600
    log.info("Timed %d texts: %.4f s each; all %d: about %.2f h of %g h", len(sample), per_text,
             len(texts), estimated, limit)
    if estimated > SAFETY * limit:
        raise KitError(advice(estimated, limit, len(texts), predictor.model_name))
    decisions = predictor.decide(predictor.raw_probs(texts))  # length-sorted batches inside
    params = run.params
    delimiter = params.competition.label_delimiter
    sub = build_submission(comp, decisions.pred, decisions.probs, params.submit.prediction,
                           delimiter)
    validate_submission(sub, comp, params.submit.prediction, delimiter)
    path = save_submission(sub, run.path)
    where = platform.detect(working_dir=params.platform.working_dir)
    if where.platform == "kaggle":  # Kaggle scores /kaggle/working/submission.csv
        where.working_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(run.path / "submission.csv", where.working_dir / "submission.csv")
    return InferResult(sub, path, folder, predictor.model_name, per_text, estimated, limit,
                       predictor.backend)
