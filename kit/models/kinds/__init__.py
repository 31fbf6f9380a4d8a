"""The registry of model kinds: each `models` entry's one module (kit/models/kinds/<kind>.py).

Training, serving, packaging and the params check iterate `KINDS` or ask `get_kind`; a new kind
is one module whose object satisfies `ModelKind` (base.py), added here, and is complete when
tests/test_model_kinds.py passes for it.
"""

from __future__ import annotations

from kit.config.compete import refit_source
from kit.errors import KitError
from kit.models.kinds.base import KINDS, FitOutput, LoadedModel, ModelKind
from kit.models.kinds.student import STUDENT
from kit.models.kinds.tfidf import TFIDF
from kit.models.kinds.transformer import TRANSFORMER

__all__ = ["KINDS", "FitOutput", "LoadedModel", "ModelKind", "get_kind", "kind_of_model"]

KINDS.update({kind.name: kind for kind in (TFIDF, TRANSFORMER, STUDENT)})


def get_kind(name: str) -> ModelKind:
    """The registered kind called `name`, or a KitError listing the kinds there are."""
    if name not in KINDS:
        raise KitError(f"Unknown model kind {name!r}; the kit knows {', '.join(KINDS)} "
                       "(kit/models/kinds/).")
    return KINDS[name]


def kind_of_model(name: str) -> ModelKind:
    """The kind that fitted model `name`: a kind's own, or its full-data refit `<kind>_full`."""
    return get_kind(refit_source(name) or name)
