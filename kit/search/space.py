"""The search space of `search` params as Optuna distributions, and a trial's params overrides."""

from __future__ import annotations

import itertools
import math
from typing import Any

from kit.config.params import Params
from kit.config.schema import SearchParams
from kit.errors import KitError


def grid_size(cfg: SearchParams) -> int:
    return math.prod(len(v) for v in cfg.grid.values()) if cfg.grid else 0


def planned_trials(cfg: SearchParams) -> int:
    """`search.trials`, or the grid's size (grid) / 20 (tpe)."""
    if cfg.trials is not None:
        return cfg.trials
    return grid_size(cfg) if cfg.method == "grid" else 20


def suggest(trial: Any, cfg: SearchParams) -> dict[str, Any]:
    """Draw one trial's values (Optuna records them): the params overrides of that trial."""
    values: dict[str, Any] = {}
    for key, choices in cfg.grid.items():
        values[key] = trial.suggest_categorical(key, list(choices))
    for key, (low, high) in cfg.ranges.items():
        log = key in cfg.log_scale
        if isinstance(low, int) and isinstance(high, int):
            values[key] = trial.suggest_int(key, low, high, log=log)
        else:
            values[key] = trial.suggest_float(key, float(low), float(high), log=log)
    return values


def check_space(params_path: str, cfg: SearchParams, load: Any) -> None:
    """Every corner of the space must make valid params: refused now, not at trial 7."""
    if not cfg.grid and not cfg.ranges:
        raise KitError(f"{params_path}: `search` has no `grid` and no `ranges`: nothing to "
                       "search. Add e.g. `search: {grid: {transformer.lr: [2.0e-5, 5.0e-5]}}`.")
    corners = [list(cfg.grid.get(k, [])) or list(cfg.ranges[k]) for k in [*cfg.grid,
                                                                         *cfg.ranges]]
    keys = [*cfg.grid, *cfg.ranges]
    for combo in itertools.islice(itertools.product(*corners), 64):
        overrides = dict(zip(keys, combo, strict=True))
        try:
            params: Params = load(overrides)
        except KitError as err:
            raise KitError(f"{params_path}: the search point {overrides} makes invalid params: "
                           f"{err}") from None
        del params
