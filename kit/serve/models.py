"""Load a run's model for prediction: one fit, the mean of its folds and seeds, or an ensemble.

Each loader returns a `LoadedModel` (a fit is loaded by its kind, kit.models.kinds, by its
registry entry and never by name here); `predict(texts)` gives the raw probabilities (n, K)
that predictions/<model>.npz holds for test: the mean of the fold (and seed) models for a k-fold
(or seeded) model, as in training; a refit `<kind>_full` loads as its kind; the ensemble's
weighted blend of its members (each member loaded the same way, from this run or the run it
came from).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from kit.config.compete import refit_source
from kit.config.params import Params, params_from_dict
from kit.errors import KitError
from kit.evaluation.rule_store import rule_labels
from kit.models.kinds import KINDS, LoadedModel, kind_of_model
from kit.models.kinds.base import fit_dirs

__all__ = ["LoadedModel", "load_model", "rule_labels"]


def load_model(folder: Path, params: Params, name: str, device: str | None,
               labels: list[str] | None = None, backend: str = "auto") -> LoadedModel:
    """`name` (a registered kind, or ensemble) of the run in `folder`.

    `backend`: how transformers predict (kit.models.onnx_export.choose_backend).

    `labels`: the class names when the run itself has no rule naming them (an ensemble's member).
    """
    if name == "ensemble":
        return _load_ensemble(folder, params, device, backend)
    if (refit_source(name) or name) not in KINDS:
        raise KitError(f"{folder}: cannot serve model {name!r}; kit.serve knows "
                       f"{', '.join(KINDS)}, their refits `<kind>_full`, and ensemble.")
    base = folder / "models" / name
    kind = kind_of_model(name)
    parts = [kind.load(folder, params, d, device, labels, backend)
             for d in fit_dirs(base)]
    if len(parts) == 1:
        return parts[0]

    def mean(texts: list[str]) -> np.ndarray:  # the folds' (and seeds') models, as for test
        return np.mean([p.predict(texts) for p in parts], axis=0)

    first = parts[0]
    return LoadedModel(mean, first.labels, first.device, first.task, first.template,
                       _joined(p.backend for p in parts))


def _joined(backends: Any) -> str:
    """One name for the backends of several models ("onnx-int8", or "onnx+torch" if mixed)."""
    return "+".join(sorted(set(backends)))


def _load_ensemble(folder: Path, params: Params, device: str | None,
                   backend: str = "auto") -> LoadedModel:
    from kit.ensemble.fit import ENSEMBLE_FILE

    info = json.loads((folder / ENSEMBLE_FILE).read_text())
    if info.get("rank"):
        raise KitError(f"{folder}: a rank-averaged ensemble ranks texts within the test set, so "
                       "it cannot score texts one request at a time. Serve a member, or refit "
                       "the ensemble with ensemble.rank: false.")
    members = [(name, w) for name, w in info["weights"].items() if w > 0]
    labels = rule_labels(folder, params)
    loaded = [(_member(folder, params, name, device, labels, backend), w)
              for name, w in members]
    templates = {m.template for m, _ in loaded}
    if len(templates) > 1:
        raise KitError(f"{folder}: the ensemble's members render texts differently "
                       f"({sorted(map(str, templates))}); kit.serve renders one text per row.")
    first = loaded[0][0]
    normalize = first.task != "multilabel"

    def blend(texts: list[str]) -> np.ndarray:
        if "stack" in info:  # the level-2 model on every member's probabilities
            from kit.ensemble.stack import apply_stack, stack_features

            probs = np.stack([m.predict(texts) for m, _ in loaded])
            return apply_stack(info["stack"]["models"], stack_features(probs, first.task),
                               first.task)
        out = sum(w * m.predict(texts) for m, w in loaded) / sum(w for _, w in loaded)
        return out / out.sum(axis=1, keepdims=True) if normalize else out

    return LoadedModel(blend, first.labels, first.device, first.task, first.template,
                       _joined(m.backend for m, _ in loaded))


def _member(folder: Path, params: Params, name: str, device: str | None,
            labels: list[str], backend: str = "auto") -> LoadedModel:
    run_name, _, kind = name.rpartition("/")
    if not run_name:
        return load_model(folder, params, kind, device, labels, backend)
    other = folder.parent / run_name
    other_params = params_from_dict(yaml.safe_load((other / "params.yaml").read_text()),
                                    source=str(other / "params.yaml"))
    return load_model(other, other_params, kind, device, labels, backend)
