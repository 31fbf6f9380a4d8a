"""What a model kind is: the small interface every kind implements, and where its fits live.

A kind (TF-IDF, transformer, ...) is one module in kit/models/kinds/ with one object satisfying
`ModelKind`, listed in the registry (kit/models/kinds/__init__.py). Training (kit.models.fit),
serving (kit.serve.models) and packaging (kit.kaggle.package) go through the registry and never
name a kind, in the spirit of scikit-learn's estimator contract and AutoGluon's model classes.
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

__all__ = ["KINDS", "FitOutput", "LoadedModel", "ModelKind", "fit_dirs", "model_dir",
           "persistent_checkpoint_dir"]

Predict = Callable[[list[str]], np.ndarray]
# One fold's fit: probabilities on its validation rows, on test, and what metrics.json records.
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


class ModelKind(Protocol):
    """One kind of model: how it fits a fold, what it leaves behind, how it loads to predict."""

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


# The registry's one dict, filled by kit/models/kinds/__init__.py: here, a kind that uses another
# (a student's teacher predicting pseudo-label files) finds it without importing the registry.
KINDS: dict[str, ModelKind] = {}


def model_dir(run: RunDir, kind: str, fold: Fold) -> Path:
    """`models/<kind>` for the hold-out model, `models/<kind>/<r0_f2>` for a fold's,
    `models/<kind>_full` for the full-data refit; a seeded fit adds `s<seed>` (`.../r0_f2/s43`)."""
    base = run.models / (refit_name(kind) if fold.is_refit else kind)
    if not (fold.is_holdout or fold.is_refit):
        base = base / fold.tag
    return base if fold.seed is None else base / f"s{fold.seed}"


def fit_dirs(base: Path) -> list[Path]:
    """The folders of a model's fits under `base` (`models/<name>`): one per fold and seed
    (`r0_f2/s43`), per fold, per seed, or `base` itself. A model predicts as the mean of them all:
    training's test probabilities (seeds averaged per fold, folds averaged) are that mean too,
    since every fold has the same seeds."""
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
