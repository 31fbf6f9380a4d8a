"""Params sections for competing: k-fold cross-validation, ensembles and the search."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from kit.config.section import Label, Section
from kit.errors import KitError


@dataclass
class CvParams(Section):
    """k-fold cross-validation: one model per fold, out-of-fold predictions for every row."""

    section: ClassVar[str] = "cv"

    folds: int = field(default=1, metadata={
        "help": "1: the `validation` hold-out; k >= 2: k folds, out-of-fold predictions.",
        "within": "[1, inf)"})
    repeats: int = field(default=1, metadata={
        "help": "Repeat the k folds with seeds seed, seed+1, ...; OOF probabilities averaged.",
        "within": "[1, inf)"})
    refit: bool = field(default=False, metadata={
        "help": "After the folds, a fit on all rows for their mean best step: `<kind>_full`."})

    def check(self) -> None:
        if self.repeats > 1 and self.folds < 2:
            raise KitError(
                f"`cv.repeats` is {self.repeats} with `cv.folds` 1: repeats need k-fold. Set "
                "cv.folds to 5 (say), or cv.repeats to 1."
            )
        if self.refit and self.folds < 2:
            raise KitError(
                "`cv.refit: true` with `cv.folds` 1: the full-data refit learns its step count "
                "from the folds' best checkpoints and borrows their out-of-fold predictions, so "
                "it needs k-fold. Set cv.folds to 5 (say), or cv.refit: false."
            )


# A full-data refit of model kind `k` is the model `k_full` (`cv.refit`): its own predictions
# file and model folder, a member like any other.
REFIT_SUFFIX = "_full"


def refit_name(kind: str) -> str:
    """The model name of `kind`'s full-data refit: `transformer` -> `transformer_full`."""
    return kind + REFIT_SUFFIX


def refit_source(name: str) -> str | None:
    """The kind a refit model `<kind>_full` refits (its OOF stand-in); None for other names."""
    return name.removesuffix(REFIT_SUFFIX) if name.endswith(REFIT_SUFFIX) else None


def run_models(models: list[str], cv: CvParams) -> list[str]:
    """The models a run trains: `models`, then each one's full-data refit with `cv.refit`."""
    return [*models, *([refit_name(m) for m in models] if cv.refit else [])]


@dataclass
class EnsembleParams(Section):
    """A weighted blend of the models' probabilities, its weights fitted on OOF predictions."""

    section: ClassVar[str] = "ensemble"

    enabled: bool = field(default=False, metadata={
        "help": "Blend the run's models (and `runs`) as model `ensemble` after training."})
    method: Literal["hill_climb", "nelder_mead", "powell", "stack"] = field(
        default="hill_climb", metadata={
            "help": "Weights: hill climbing, scipy's simplex/Powell; stack: a level-2 model."})
    stack_c: float = field(default=1.0, metadata={
        "help": "stack: inverse L2 strength of the level-2 logistic regression.",
        "within": "(0, inf)"})
    rank: bool = field(default=False, metadata={
        "help": "Blend per-class ranks instead of probabilities (rank averaging)."})
    iterations: int = field(default=200, metadata={
        "help": "Hill-climbing steps (each adds one member once more).", "within": "[1, inf)"})
    runs: list[str] = field(default_factory=list, metadata={
        "help": "Other run folders whose models join as members (same folds and rows)."})

    def check(self) -> None:
        if self.method == "stack" and self.rank:
            raise KitError("`ensemble.method: stack` learns from the members' probabilities, "
                           "but `ensemble.rank: true` hands it ranks. Set ensemble.rank: false.")


@dataclass
class SearchParams(Section):
    """A hyper-parameter search over params keys; each trial is a run (`python -m kit search`)."""

    section: ClassVar[str] = "search"

    method: Literal["grid", "tpe"] = field(default="grid", metadata={
        "help": "grid: every combination of `grid`; tpe: Optuna's TPE over `grid` and `ranges`."})
    grid: dict[str, list[Label]] = field(default_factory=dict, metadata={
        "help": "Params key -> values to try: `{transformer.lr: [2e-5, 5e-5]}`."})
    ranges: dict[str, list[Label]] = field(default_factory=dict, metadata={
        "help": "tpe: key -> [low, high] (ints stay ints): `{transformer.lora.r: [4, 64]}`."})
    log_scale: list[str] = field(default_factory=list, metadata={
        "help": "Keys of `ranges` sampled on a log scale (learning rates)."})
    trials: int | None = field(default=None, metadata={
        "help": "Trials to run; null: the grid's size (grid) or 20 (tpe).", "within": "[1, inf)"})
    storage: str | None = field(default=None, metadata={
        "help": "Optuna storage; null: sqlite in the search folder; shared: an RDB URL."})
    prune: bool = field(default=True, metadata={
        "help": "Stop unpromising trials at their evaluations (Optuna's median pruner)."})

    def check(self) -> None:
        for key, values in self.ranges.items():
            if self.method != "tpe":
                raise KitError(f"`search.ranges` ({key}) needs `search.method: tpe`; a grid "
                               "lists its values in `search.grid`.")
            if (len(values) != 2 or not all(isinstance(v, (int, float)) for v in values)
                    or not values[0] < values[1]):
                raise KitError(f"`search.ranges.{key}` is {values}; write [low, high] with "
                               "low < high, e.g. [1.0e-5, 1.0e-4].")
            if key in self.log_scale and values[0] <= 0:
                raise KitError(f"`search.ranges.{key}` starts at {values[0]}, but a log scale "
                               "(`search.log_scale`) needs low > 0.")
        for key in self.log_scale:
            if key not in self.ranges:
                raise KitError(f"`search.log_scale` names {key!r}, which is not a key of "
                               f"`search.ranges` {list(self.ranges)}.")
        for key, values in self.grid.items():
            if not values:
                raise KitError(f"`search.grid.{key}` is empty; list the values to try.")
            if key in self.ranges:
                raise KitError(f"{key!r} is in both `search.grid` and `search.ranges`.")
