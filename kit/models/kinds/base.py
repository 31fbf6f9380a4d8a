"""What a model kind is: the small interface every kind implements, and where its fits live.

A kind is one module in kit/models/kinds/ with one object, listed in the registry
(kit/models/kinds/__init__.py). A `ModelKind` (TF-IDF, transformer) is trained on each fold of
the texts and listed in params `models`; a `BlendKind` (the ensemble) is fitted once, after
them, on their predictions, when its params section is enabled. Both save one artifact in their
model folder and load it to predict. Training (kit.steps.train, kit.models.fit), serving
(kit.serve.models) and packaging (kit.kaggle.package) go through the registry and never name a
kind, in the spirit of scikit-learn's estimator contract and AutoGluon's model classes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from kit.config.compete import refit_name

if TYPE_CHECKING:
    from kit.config.params import Params
    from kit.core.rundir import RunDir
    from kit.data.competition import Competition
    from kit.data.folds import Fold
    from kit.tracking import Tracker

__all__ = [
    "EXPORT_INFO",
    "MERGED_FOLDS",
    "BlendKind",
    "FitOutput",
    "LoadMember",
    "LoadedModel",
    "ModelKind",
    "fit_dirs",
    "model_dir",
    "persistent_checkpoint_dir",
]

# The record a transformer export folder (`.../model/`) is finished with (kit.models.export
# writes it last); here, torch-free, so the packaging and Kaggle layers find exports by it.
EXPORT_INFO = "kit_export.json"
# `models/<kind>/merged/`: one model standing for the k fold models (kit export --merge-folds,
# kit.models.fold_merge); loaders prefer it, packaging ships it instead of the folds.
MERGED_FOLDS = "merged"

Predict = Callable[[list[str]], np.ndarray]
# One fold's fit: probabilities on its validation rows, on test, and facts about the fit (its
# ModelReport.details in the run state: global_step, model_dir, ...).
FitOutput = tuple[np.ndarray, np.ndarray, dict[str, Any]]


@dataclass
class LoadedModel:
    """A model ready to predict raw probabilities, with what rendering its texts needs."""

    predict: Predict
    labels: list[str]
    device: str
    task: str
    template: str | None
    backend: str = "torch"  # what runs it: sklearn (tfidf), torch, onnx or onnx-int8
    # A `swap` test-time view's two text columns: rows are rendered with kit.data.pairs so each
    # text carries its swapped rendering (kit.serve.Predictor.render); None: plain texts.
    pair_columns: tuple[str, str] | None = None


class ModelKind(Protocol):
    """One kind of model: how it fits a fold, what it leaves behind, how it loads to predict.

    A kind may also have `after_folds(run, comp, test_probs) -> dict`, a step of its own once
    all its k folds are fitted (the transformer merges its fold adapters there); the dict
    joins the kind's metrics.json entry. kit.steps.train calls it when present.
    """

    name: str  # its entry in params `models` and its folder under models/
    params_section: str  # the params section it reads (a field of kit.config.schema.Params)
    artifact: str  # the file or folder a fit leaves in its model folder: loaded, packaged

    def fit(self, run: RunDir, comp: Competition, fold: Fold, tracker: Tracker,
            callbacks: list) -> FitOutput:
        """Train on `fold.train_rows`, save `artifact` in `model_dir(run, name, fold)`;
        probabilities on val rows and test. `fold.seed`, when set, is the seed to train with;
        `fold.is_refit`: all rows, no val rows (a kind that counts steps trains the folds' mean
        best step count)."""
        ...

    def load(self, folder: Path, params: Params, model_dir: Path, device: str | None,
             labels: list[str] | None, backend: str = "auto") -> LoadedModel:
        """The fit saved in `model_dir`, ready to predict (labels: names when not recorded;
        backend: what runs it, where the kind has a choice)."""
        ...


class LoadMember(Protocol):
    """Loads a fitted model by its name from a run folder (kit.models.kinds.load_fitted): a
    blend's members, a student's teacher; `fold` (a tag, `r0_f2`): only that fold's fits."""

    def __call__(self, folder: Path, params: Params, name: str, device: str | None,
                 labels: list[str] | None = None, backend: str = "auto",
                 fold: str | None = None) -> LoadedModel: ...


class BlendKind(Protocol):
    """A kind fitted once per run on the other models' predictions (an ensemble, a stack)."""

    name: str  # its model name (predictions/<name>.npz, models/<name>/, `submit.model`)
    params_section: str  # the params section it reads; its `enabled` switches it on
    artifact: str  # the file its fit leaves in models/<name>/: loaded, packaged

    def fit_run(self, run: RunDir, comp: Competition, tracker: Tracker) -> float:
        """Fit on the run's finished models' predictions; save its predictions and `artifact`;
        return its validation score (the competition metric)."""
        ...

    def load(self, folder: Path, params: Params, model_dir: Path, device: str | None,
             labels: list[str] | None, backend: str = "auto") -> LoadedModel:
        """The fit saved in `model_dir`, with its members, ready to predict raw probabilities."""
        ...

    def other_runs(self, folder: Path) -> list[str]:
        """Names of the runs beside `folder` whose models this fit loads (a package copies them)."""
        ...


def model_dir(run: RunDir, kind: str, fold: Fold) -> Path:
    """`models/<kind>` for the hold-out model, `models/<kind>/<r0_f2>` for a fold's,
    `models/<kind>_full` for the full-data refit; a seeded fit adds `s<seed>` (`.../r0_f2/s43`)."""
    base = run.models / (refit_name(kind) if fold.is_refit else kind)
    if not (fold.is_holdout or fold.is_refit):
        base = base / fold.tag
    return base if fold.seed is None else base / f"s{fold.seed}"


def fit_dirs(base: Path, merged: bool = True) -> list[Path]:
    """The folders of a model's fits under `base` (`models/<name>`): one per fold and seed
    (`r0_f2/s43`), per fold, per seed, or `base` itself. A model predicts as the mean of them all:
    training's test probabilities (seeds averaged per fold, folds averaged) are that mean too,
    since every fold has the same seeds. With `merged` (the default), fits merged into one model
    (`merged/`, kit.models.fold_merge) stand for them all: serving and packaging use that one."""
    if merged and (base / MERGED_FOLDS / "model" / EXPORT_INFO).is_file():
        return [base / MERGED_FOLDS]
    for pattern in ("r[0-9]*_f[0-9]*/s[0-9]*", "r[0-9]*_f[0-9]*", "s[0-9]*"):
        found = sorted(p for p in base.glob(pattern) if p.is_dir())
        if found:
            return found
    return [base]


def persistent_checkpoint_dir(run: RunDir, kind: str = "transformer") -> str | None:
    """This run's checkpoints of `kind` under the platform's persistent folder (env.json)."""
    try:
        where = json.loads((run.path / "env.json").read_text()).get("where") or {}
    except (OSError, json.JSONDecodeError):
        return None
    root = where.get("checkpoint_dir")
    return str(Path(root) / run.params.name / kind) if root else None
