"""Load a run's model for prediction: one fit, the mean of its folds and seeds, or an ensemble.

Every model loads through the registry of kinds (kit.models.kinds.load_fitted), never by its
name here; `predict(texts)` gives the raw probabilities (n, K) that predictions/<model>.npz
holds for test: the mean of the fold (and seed) models, or the folds merged into one, as in
training; a refit `<kind>_full` loads as its kind; the ensemble's blend of its members (each
loaded the same way, from this run or the run it came from).
"""

from __future__ import annotations

from pathlib import Path

from kit.config.params import Params
from kit.evaluation.rule_store import rule_labels
from kit.models.kinds import LoadedModel, load_fitted

__all__ = ["LoadedModel", "load_model", "rule_labels"]


def load_model(folder: Path, params: Params, name: str, device: str | None,
               labels: list[str] | None = None, backend: str = "auto") -> LoadedModel:
    """`name` (a registered kind: kit.models.kinds.ALL_KINDS) of the run in `folder`.

    `backend`: how transformers predict (kit.models.onnx_export.choose_backend).

    `labels`: the class names when the run itself has no rule naming them (an ensemble's member).
    """
    return load_fitted(Path(folder), params, name, device, labels, backend)

