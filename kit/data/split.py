"""The hold-out split: seeded validation rows, saved in the run folder for every model."""

from __future__ import annotations

import json
import logging

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from kit.core.atomic import write_atomic
from kit.core.rundir import RunDir
from kit.data.competition import Competition
from kit.errors import KitError

log = logging.getLogger(__name__)


def make_split(comp: Competition, size: float, seed: int, stratify: bool = True,
               group_column: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Row positions (train, validation) of a seeded hold-out split.

    Stratified on the label (multiclass, binary); with `group_column`, a group never straddles
    the split (StratifiedGroupKFold's first fold, so it stays stratified too).
    """
    n = len(comp.train)
    rows = np.arange(n)
    strat = comp.y if (stratify and comp.task != "multilabel") else None
    if group_column:
        groups = comp.train[group_column].to_numpy()
        n_splits = max(2, round(1 / size))
        y_for_split = strat if strat is not None else np.zeros(n, dtype=int)
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        train_rows, val_rows = next(splitter.split(rows, y_for_split, groups))
        return np.sort(train_rows), np.sort(val_rows)
    if strat is not None:
        counts = np.bincount(strat)
        if (counts[counts > 0] < 2).any():
            rare = [comp.labels[i] for i in np.flatnonzero((counts > 0) & (counts < 2))]
            log.warning(f"Classes {rare} have one training row: the split is not stratified.")
            strat = None
    train_rows, val_rows = train_test_split(rows, test_size=size, random_state=seed,
                                            stratify=strat)
    return np.sort(train_rows), np.sort(val_rows)


def load_or_make_split(run: RunDir, comp: Competition) -> tuple[np.ndarray, np.ndarray]:
    """The run's split, saved as split.json (validation ids) so every model uses the same rows."""
    path = run.path / "split.json"
    ids = comp.train_ids
    if path.exists():
        val_ids = set(json.loads(path.read_text())["validation_ids"])
        is_val = np.array([i in val_ids for i in ids.tolist()])
        if is_val.sum() != len(val_ids):
            raise KitError(f"{path} names ids that are not in train.csv; delete it to re-split.")
        return np.flatnonzero(~is_val), np.flatnonzero(is_val)
    v = run.params.validation
    train_rows, val_rows = make_split(comp, v.size, run.params.seed, v.stratify, v.group_column)
    write_atomic(path, json.dumps({"validation_ids": ids[val_rows].tolist()}))
    return train_rows, val_rows
