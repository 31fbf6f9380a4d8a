"""The hold-out split: seeded validation rows, saved in the run folder for every model."""

from __future__ import annotations

import json
import logging
import math

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
        groups = group_values(comp, group_column)
        n_splits = max(2, round(1 / size))
        n_groups = len(np.unique(groups))
        if n_groups < n_splits:
            raise KitError(
                f"`validation.group_column` {group_column!r} has {n_groups} distinct values; a "
                f"split with `validation.size` {size} needs at least {n_splits} (the validation "
                f"part is one group in {n_splits}). Use a column with more groups, a larger "
                "`validation.size`, or remove `validation.group_column`."
            )
        y_for_split = strat if strat is not None else np.zeros(n, dtype=int)
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        train_rows, val_rows = next(splitter.split(rows, y_for_split, groups))
        return _checked(comp, np.sort(train_rows), np.sort(val_rows))
    n_val = math.ceil(size * n)  # as scikit-learn counts a fractional test_size
    if n_val < 1 or n - n_val < 1:
        raise KitError(
            f"The training file has {n} rows: too few for a hold-out split with "
            f"`validation.size` {size} ({n_val} validation rows, {n - n_val} to train on). "
            "Use a training file with more rows (check `competition.max_rows`), or change "
            "`validation.size`."
        )
    if strat is not None:
        counts = np.bincount(strat)
        present = int((counts > 0).sum())
        if (counts[counts > 0] < 2).any():
            rare = [comp.labels[i] for i in np.flatnonzero((counts > 0) & (counts < 2))]
            log.warning(f"Classes {rare} have one training row: the split is not stratified.")
            strat = None
        elif n_val < present or n - n_val < present:
            log.warning(f"{n_val} validation rows cannot hold all {present} classes: the split "
                        "is not stratified.")
            strat = None
    train_rows, val_rows = train_test_split(rows, test_size=n_val, random_state=seed,
                                            stratify=strat)
    return _checked(comp, np.sort(train_rows), np.sort(val_rows))


def load_or_make_split(run: RunDir, comp: Competition) -> tuple[np.ndarray, np.ndarray]:
    """The run's split, saved as split.json (validation ids) so every model uses the same rows."""
    path = run.path / "split.json"
    ids = comp.train_ids
    if path.exists():
        val_ids = json.loads(path.read_text())["validation_ids"]
        known = set(ids.tolist())
        unknown = [i for i in val_ids if i not in known]
        if unknown:
            raise KitError(
                f"{path} names {len(unknown)} validation ids that are not in the training data "
                f"(first: {unknown[:5]}): the training file changed since this run made its "
                "split. Start a new run (another run name) to split the new data, or put the "
                "old training file back to continue this run."
            )
        val_set = set(val_ids)
        is_val = np.array([i in val_set for i in ids.tolist()], dtype=bool)
        return _checked(comp, np.flatnonzero(~is_val), np.flatnonzero(is_val))
    v = run.params.validation
    train_rows, val_rows = make_split(comp, v.size, run.params.seed, v.stratify, v.group_column)
    write_atomic(path, json.dumps({"validation_ids": ids[val_rows].tolist()}))
    return train_rows, val_rows


def group_values(comp: Competition, group_column: str) -> np.ndarray:
    """The group of every training row (`validation.group_column`); refuses missing values."""
    col = comp.train.get(group_column)
    if col is None or col.isna().all():
        raise KitError(
            f"`validation.group_column` is {group_column!r}, but the training file in "
            f"{comp.folder} has no such column (it has {list(comp.train.columns)[:20]}). Set it "
            "to the column whose rows must stay on one side of the split, or remove it."
        )
    if col.isna().any():
        missing = comp.train.loc[col.isna(), comp.id_column].head(5).tolist()
        raise KitError(
            f"`validation.group_column` {group_column!r} is empty on {int(col.isna().sum())} "
            f"training rows (first ids: {missing}), so they belong to no group. Fill it in "
            "(e.g. with the row's id, a group of its own), or remove `validation.group_column`."
        )
    return col.to_numpy()


def _checked(comp: Competition, train_rows: np.ndarray,
             val_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The training part must hold two classes, or no model can be fitted on it."""
    if comp.task != "multilabel" and len(np.unique(comp.y[train_rows])) < 2:
        raise KitError(
            f"The split leaves one class to train on: rows per class in the training part "
            f"{_per_class(comp, train_rows)}, in the validation part "
            f"{_per_class(comp, val_rows)}. Models need two classes to learn from: use a "
            "smaller `validation.size`, `validation.stratify: true`, or a "
            "`validation.group_column` with more groups."
        )
    return train_rows, val_rows


def _per_class(comp: Competition, rows: np.ndarray) -> dict[str, int]:
    counts = np.bincount(comp.y[rows], minlength=len(comp.labels))
    return {comp.labels[i]: int(k) for i, k in enumerate(counts) if k}
