"""The registry of model kinds: each kind's one module (kit/models/kinds/<kind>.py).

Training, serving, packaging and the params check iterate the registry or ask `get_kind`; a new
kind is one module whose object satisfies `ModelKind` (trained per fold, listed in params
`models`) or `BlendKind` (fitted after them on their predictions), added to `KINDS` or `BLENDS`
here, and is complete when tests/test_model_kinds.py passes for it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from kit.config.compete import refit_source
from kit.config.params import Params
from kit.errors import KitError
from kit.models.kinds.base import (
    MERGED_FOLDS,
    BlendKind,
    FitOutput,
    LoadedModel,
    ModelKind,
    fit_dirs,
)
from kit.models.kinds.ensemble import EnsembleKind
from kit.models.kinds.student import StudentKind
from kit.models.kinds.tfidf import TFIDF
from kit.models.kinds.transformer import TRANSFORMER

__all__ = ["ALL_KINDS", "BLENDS", "KINDS", "BlendKind", "FitOutput", "LoadedModel", "ModelKind",
           "fold_kind", "get_kind", "kind_of_model", "load_fitted"]

log = logging.getLogger(__name__)


def load_fitted(folder: Path, params: Params, name: str, device: str | None,
                labels: list[str] | None = None, backend: str = "auto",
                fold: str | None = None) -> LoadedModel:
    """Model `name` of the run in `folder`, ready to predict: one fit, or its fold (and seed) fits
    averaged as for test, or the folds merged into one; a refit `<kind>_full` loads as its kind
    (`labels`: class names when the run has no rule naming them). `fold` (a tag, `r0_f2`): that
    fold's fit alone (its seeds averaged), as a distilled student's fold learns from it."""
    kind = kind_of_model(name)
    base = Path(folder) / "models" / name
    if fold is None:
        fits = fit_dirs(base)  # each fold (and seed), or the folds merged into one
    elif name in BLENDS or not (base / fold).is_dir():
        raise KitError(f"{folder}: model {name} has no fit of fold {fold} ({base / fold}): it "
                       "was not trained on these k folds (a blend, a full-data refit or a "
                       "hold-out model has none).")
    else:
        fits = fit_dirs(base / fold, merged=False)  # the fold's seeds, or the fold's one fit
    if fits == [base / MERGED_FOLDS]:
        log.info("%s: predicting with the folds merged into one model (%s); delete that folder "
                 "to predict with the fold models' mean.", name, fits[0])
    parts = [kind.load(Path(folder), params, d, device, labels, backend) for d in fits]
    if len(parts) == 1:
        return parts[0]

    def mean(texts: list[str]) -> np.ndarray:  # the folds' (and seeds') models, as for test
        return np.mean([p.predict(texts) for p in parts], axis=0)

    first = parts[0]
    return LoadedModel(mean, first.labels, first.device, first.task, first.template,
                       "+".join(sorted({p.backend for p in parts})), first.pair_columns)


# Trained on each fold, in the order params `models` lists them.
KINDS: dict[str, ModelKind] = {kind.name: kind
                               for kind in (TFIDF, TRANSFORMER, StudentKind(load_fitted))}
# Fitted once per run after them, on their predictions, when their params section is enabled.
BLENDS: dict[str, BlendKind] = {kind.name: kind for kind in (EnsembleKind(load_fitted),)}
ALL_KINDS: dict[str, ModelKind | BlendKind] = {**KINDS, **BLENDS}


def get_kind(name: str) -> ModelKind | BlendKind:
    """The registered kind called `name`, or a KitError listing the kinds there are."""
    if name not in ALL_KINDS:
        raise KitError(f"Unknown model kind {name!r}; the kit knows {', '.join(ALL_KINDS)} "
                       "(kit/models/kinds/).")
    return ALL_KINDS[name]


def fold_kind(name: str) -> ModelKind:
    """The kind `name` trained per fold (an entry of params `models`)."""
    if name in BLENDS:
        raise KitError(f"{name!r} is fitted on the other models' predictions, not on folds: "
                       f"enable its params section (`{BLENDS[name].params_section}.enabled: "
                       "true`) instead of listing it in `models`.")
    get_kind(name)  # an unknown name: the error listing every kind
    return KINDS[name]


def kind_of_model(name: str) -> ModelKind:
    """The kind that fitted model `name`: a kind's own, or its full-data refit `<kind>_full`."""
    return get_kind(refit_source(name) or name)
