"""The members of an ensemble: this run's models and the models of other runs, row-aligned.

A member is one model's `Predictions` (OOF or hold-out rows, and test). Members from other runs
join only when they predicted the same training rows and test ids (the same data, seed and `cv`
make the same folds), reordered to this run's row order; anything else is refused by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kit.config.compete import refit_source, run_models
from kit.core.rundir import Predictions, RunDir
from kit.errors import KitError

ENSEMBLE = "ensemble"


@dataclass
class Member:
    """One model's probabilities on the shared rows: `name` is `kind` or `<run>/<kind>`."""

    name: str
    val_probs: np.ndarray
    test_probs: np.ndarray


def collect_members(run: RunDir) -> tuple[list[Member], np.ndarray, np.ndarray]:
    """Members in order (this run's models, then `ensemble.runs`), the row ids and test ids."""
    own = [run.load_predictions(name) for name in run_models(run.params.models, run.params.cv)]
    others = [(name, p) for name in run.params.ensemble.runs for p in _run_predictions(run, name)]
    named = [(p.model, p) for p in own] + [(f"{name}/{p.model}", p) for name, p in others]
    if not named:
        raise KitError("The ensemble has no member: list `models` or `ensemble.runs`.")
    first = named[0][1]
    val_ids, test_ids = first.val_ids, first.test_ids
    return [_aligned(name, p, val_ids, test_ids) for name, p in named], val_ids, test_ids


def _run_predictions(run: RunDir, name: str) -> list[Predictions]:
    folder = run.path.parent / name if not Path(name).is_absolute() else Path(name)
    preds = folder / "predictions"
    files = sorted(p for p in preds.glob("*.npz") if p.stem != ENSEMBLE)
    if not files:
        raise KitError(
            f"`ensemble.runs` names {name!r}, but {preds} holds no model predictions. Name a "
            f"run folder under {run.path.parent} whose 02_train finished."
        )
    other = RunDir(folder, run.params, run.root)  # only its predictions folder is read
    return [other.load_predictions(p.stem) for p in files]


def _aligned(name: str, preds: Predictions, val_ids: np.ndarray,
             test_ids: np.ndarray) -> Member:
    if sorted(map(str, preds.val_ids.tolist())) != sorted(map(str, val_ids.tolist())):
        raise KitError(
            f"Ensemble member {name!r} predicted other training rows ({len(preds.val_ids)} rows) "
            f"than the first member ({len(val_ids)}): members must share folds. Train them with "
            "the same data, seed, `cv` and `validation` params."
        )
    if not np.array_equal(np.asarray(preds.test_ids, dtype=str), np.asarray(test_ids, dtype=str)):
        raise KitError(f"Ensemble member {name!r} predicted other test ids than the first "
                       "member: members must come from the same competition data.")
    where = {v: i for i, v in enumerate(map(str, preds.val_ids.tolist()))}
    order = np.array([where[v] for v in map(str, val_ids.tolist())])
    return Member(name, preds.val_probs[order], preds.test_probs)


def share_with_refits(names: list[str], weights: np.ndarray) -> np.ndarray:
    """Weights with each full-data refit (`<kind>_full`) and its k-fold kind sharing equally what
    the two earned together.

    The refit's OOF rows are its kind's (a stand-in: kit.steps.refit), so no blend can tell the
    two apart on them, and a fit would give the refit nothing (hill climbing keeps the first of
    equals). Shared equally, the kind's weight goes half to its fold models, half to the model
    of all rows at test, and the blend's OOF probabilities do not change.
    """
    weights = np.asarray(weights, dtype=float).copy()
    where = {name: i for i, name in enumerate(names)}
    for name, i in where.items():
        run_name, slash, model = name.rpartition("/")  # "<run>/transformer_full" from a run
        source = refit_source(model)
        j = None if source is None else where.get(run_name + slash + source)
        if j is not None:
            weights[i] = weights[j] = (weights[i] + weights[j]) / 2
    return weights
