"""Inference step (05_infer): the attached model and rule predict test, within the time limit.

For code competitions: the notebook runs on Kaggle with the internet off, the offline dataset
(`python -m kit package`) attached. It finds the packaged run there (`<input>/**/run/`), loads
its chosen model and decision rule exactly as `kit serve` does (kit.serve.Predictor; on a CPU
the export's ONNX files when `kit export --onnx` wrote them).

The time plan is made for the run that counts: code competitions often show a few test rows and
swap in the hidden set at scoring, so `kaggle.test_rows` (the hidden size the competition
states) is what the projection uses. A sample of the texts spread over their lengths is timed
(texts/s); the plan prints it, the projected wall time for the hidden rows and the choice made
(backend, batch size, devices), and stops with advice only when that does not fit in
`kaggle.time_limit_hours`. With two or more GPUs visible and a PyTorch transformer, one model
copy per GPU predicts its share of the texts in its own thread (the pattern of public LMSYS
notebooks on Kaggle's T4 x2); the shares are interleaved over the length order, so both GPUs
get long and short texts, and the rows are put back in input order. Then `submission.csv` is
written (also into the platform's working dir, where Kaggle scores it).
"""

from __future__ import annotations

import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
class InferPlan:
    """What 05_infer measured and chose before predicting all of test."""

    sampled: int  # texts timed
    texts_per_second: float
    visible_rows: int  # test.csv here
    hidden_rows: int  # what the scored run predicts (kaggle.test_rows, else visible_rows)
    projected_hours: float  # loading and timing so far, plus the hidden rows at the rate
    limit_hours: float
    backend: str
    batch_size: int | None  # transformer.eval_batch_size (None: TF-IDF)
    devices: list[str] = field(default_factory=list)  # one model copy each

    @property
    def fits(self) -> bool:
        return self.projected_hours <= SAFETY * self.limit_hours

    def lines(self) -> list[str]:
        """The plan as 05_infer prints it."""
        hidden = ("" if self.hidden_rows == self.visible_rows else
                  f" (kaggle.test_rows; {self.visible_rows} visible here)")
        copies = f"{len(self.devices)} model copies ({', '.join(self.devices)}), one thread each"
        return [
            f"timed {self.sampled} texts: {self.texts_per_second:.1f} texts/s",
            f"hidden test: {self.hidden_rows} rows{hidden} -> about {self.projected_hours:.2f} h"
            f" of {self.limit_hours:g} h (stops past {SAFETY:.0%})",
            f"choice: backend {self.backend}, batch size {self.batch_size or '-'}, "
            + (copies if len(self.devices) > 1 else f"device {self.devices[0]}"),
        ]


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
    plan: InferPlan | None = None


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


def visible_gpus() -> list[str]:
    """The CUDA devices this process sees ("cuda:0", ...); none on a CPU machine."""
    try:
        import torch
    except ImportError:
        return []
    return [f"cuda:{k}" for k in range(torch.cuda.device_count())]


def predict_on_devices(predictors: list[Any], texts: list[str]) -> np.ndarray:
    """Raw probabilities of `texts` in input order, each predictor (one model copy per device)
    taking every n-th text of the length order in its own thread."""
    if len(predictors) == 1:
        return predictors[0].raw_probs(texts)
    order = np.argsort([len(t) for t in texts], kind="stable")
    shares = [order[k::len(predictors)] for k in range(len(predictors))]
    with ThreadPoolExecutor(max_workers=len(predictors)) as pool:
        parts = list(pool.map(lambda pair: pair[0].raw_probs([texts[i] for i in pair[1]]),
                              zip(predictors, shares, strict=True)))
    out = np.empty((len(texts), parts[0].shape[1]), dtype=parts[0].dtype)
    for share, part in zip(shares, parts, strict=True):
        out[share] = part
    return out


def advice(estimated: float, limit: float, n: int, model: str) -> str:
    return (
        f"Predicting {n} test texts with {model} would take about {estimated:.1f} h, past "
        f"{SAFETY:.0%} of the {limit:g} h limit (kaggle.time_limit_hours); stopped before "
        "Kaggle kills the notebook. Fix: a larger batch if memory allows "
        "(transformer.eval_batch_size) or a shorter transformer.max_length; export merged "
        "weights (merge=True) instead of an adapter; fewer folds or models (a k-fold LoRA "
        "run: `kit export RUN --merge-folds`, one model for the k folds); or a T4 x2 / "
        "faster accelerator (kaggle.accelerator); on a CPU, `kit export RUN --onnx --int8` "
        "before packaging (05_infer then runs ONNX Runtime int8).")


def predict_test(run: RunDir, comp: Competition, model_run: str | Path | None = None,
                 sample_size: int = 64, backend: str = "auto") -> InferResult:
    """Predict `comp`'s test set with the packaged run; stop early when it would not fit.

    `backend`: as `kit predict --backend`; auto takes the export's ONNX files (int8 first) on a
    CPU when `kit export --onnx` wrote them, PyTorch otherwise.
    """
    from kit.serve.predictor import Predictor  # loads torch only when a transformer is used

    started = time.monotonic()
    params = run.params
    folder = find_model_run(run, model_run)
    log.info("Loading the model of %s", folder)
    gpus = visible_gpus()
    predictor = Predictor.load(folder, device=gpus[0] if gpus else None, backend=backend)
    predictors = [predictor]
    if len(gpus) > 1 and predictor.backend == "torch":  # a copy per GPU of a torch model
        predictors += [Predictor.load(folder, device=d, backend=backend) for d in gpus[1:]]
    texts = predictor.render(comp.test, params.competition.test_file)
    sample = sample_indices([len(t) for t in texts], sample_size)
    tic = time.monotonic()
    predict_on_devices(predictors, [texts[i] for i in sample])
    rate = len(sample) / max(time.monotonic() - tic, 1e-9)
    hidden = params.kaggle.test_rows or len(texts)
    if hidden < len(texts):
        log.warning("kaggle.test_rows is %d but test.csv has %d rows; planning for %d.", hidden,
                    len(texts), len(texts))
        hidden = len(texts)
    plan = InferPlan(len(sample), rate, len(texts), hidden,
                     (time.monotonic() - started + hidden / rate) / 3600,
                     params.kaggle.time_limit_hours, predictor.backend,
                     None if predictor.backend == "sklearn"  # no batches: TF-IDF alone
                     else predictor.params.transformer.eval_batch_size,
                     [p.device for p in predictors])
    for line in plan.lines():
        log.info("Plan: %s", line)
    if not plan.fits:
        raise KitError(advice(plan.projected_hours, plan.limit_hours, hidden,
                              predictor.model_name))
    per_text, estimated, limit = 1 / rate, plan.projected_hours, plan.limit_hours
    decisions = predictor.decide(predict_on_devices(predictors, texts))  # sorted batches inside
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
                       predictor.backend, plan)
