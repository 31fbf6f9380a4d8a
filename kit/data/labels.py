"""Labels to model targets: class ids (or multi-hot rows) and the ordered class names.

A label cell is one class, a list, a list literal or delimited text (multilabel, or the primary
code of a delimited cell); `competition.label_map` maps raw codes onto classes. Every refusal
names the file, the labels, the rows per label, the first ids and the fix.
"""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pandas as pd

from kit.config.label_text import label_str
from kit.config.params import CompetitionParams
from kit.data.checks import by_count, first_ids, n_rows, require_columns
from kit.data.labelmap import map_label, split_labels
from kit.errors import KitError

log = logging.getLogger(__name__)


def encode_labels(df: pd.DataFrame, comp: CompetitionParams, file: str,
                  ) -> tuple[np.ndarray, list[str]]:
    """Turn the label column into ints (or multi-hot) and the ordered class names."""
    col = comp.label_column
    require_columns(df, [col], file)
    nan = df[col].isna()
    if nan.any():
        raise KitError(
            f"{file}: column {col!r} has {int(nan.sum())} missing labels (first ids: "
            f"{df.loc[nan, comp.id_column].head(5).tolist()}). Drop those rows or fill them."
        )
    if comp.task == "multilabel":
        per_row = [split_labels(v, comp.label_delimiter) for v in df[col]]
    else:
        per_row = [[label_str(v)] for v in df[col]]
        if comp.label_delimiter is not None:  # e.g. arXiv "cs.AI math.CO": the primary one
            per_row = [split_labels(v, comp.label_delimiter)[:1] for v in df[col]]
    if comp.label_map:
        mapped, unmapped = [], []
        for i, labels in enumerate(per_row):
            out = [m for m in (map_label(raw, comp.label_map) for raw in labels) if m is not None]
            if len(out) < len(labels):
                unmapped.append(i)
            mapped.append(list(dict.fromkeys(out)))
        per_row = mapped
        empty = [i for i, labels in enumerate(per_row) if not labels]
        if empty:
            raws = df[col].iloc[empty[:5]].tolist()
            raise KitError(
                f"{file}: {len(empty)} rows have labels that `competition.label_map` does not "
                f"map (first raw values: {raws}, {first_ids(df, empty, comp.id_column)}). Add "
                "exact keys or prefixes for them."
            )
    if comp.labels:
        labels = [label_str(x) for x in comp.labels]
    else:
        labels = _infer_labels(per_row, comp, df, file)
    index = {name: i for i, name in enumerate(labels)}
    outside = [i for i, row in enumerate(per_row) if any(x not in index for x in row)]
    if outside:
        found = Counter(x for i in outside for x in per_row[i] if x not in index)
        fix = ("Fix or drop those rows, or map their labels onto the two classes with "
               "`competition.label_map`." if comp.task == "binary" else
               "Add them to `competition.labels` (or map them with `competition.label_map`), "
               "or fix or drop those rows.")
        raise KitError(
            f"{file}: {n_rows(len(outside))} with labels outside `competition.labels` "
            f"{labels}: rows per label {by_count(found)} "
            f"({first_ids(df, outside, comp.id_column)}). {fix}"
        )
    if comp.task != "multilabel":
        _check_two_classes(per_row, labels, comp, df, file)
    if comp.task == "multilabel":
        y = np.zeros((len(df), len(labels)), dtype=np.int64)
        for i, row in enumerate(per_row):
            y[i, [index[x] for x in row]] = 1
    else:
        y = np.array([index[row[0]] for row in per_row], dtype=np.int64)
    return y, labels


def _infer_labels(per_row: list[list[str]], comp: CompetitionParams, df: pd.DataFrame,
                  file: str) -> list[str]:
    seen = sorted({x for row in per_row for x in row})
    if comp.task != "binary" or len(seen) < 2:  # one class: _check_two_classes says so
        return seen
    if len(seen) > 2:
        _refuse_extra_binary_labels(per_row, comp, df, file)
    if comp.positive_label is not None:
        if comp.positive_label not in seen:
            raise KitError(
                f"`competition.positive_label` {comp.positive_label!r} is not among {seen}."
            )
        return [x for x in seen if x != comp.positive_label] + [comp.positive_label]
    for pos in ("1", "True", "true", "yes", "spam", "positive"):
        if pos in seen:
            return [x for x in seen if x != pos] + [pos]
    raise KitError(
        f"task is binary with labels {seen}: say which is positive with "
        f"`competition.positive_label: {seen[1]}`."
    )


def _refuse_extra_binary_labels(per_row: list[list[str]], comp: CompetitionParams,
                                df: pd.DataFrame, file: str) -> None:
    """A binary file with more than two labels: a few stray rows, or really multiclass."""
    counts = Counter(row[0] for row in per_row)
    main = [x for x, _ in counts.most_common(2)]
    extra = {x: n for x, n in counts.items() if x not in main}
    rows = [i for i, row in enumerate(per_row) if row[0] in extra]
    where = f"{n_rows(len(rows))}, {first_ids(df, rows, comp.id_column)}"
    two = " or ".join(repr(x) for x in sorted(main))
    pairs = [f"{x!r}: {x!r}" for x in sorted(main)] + [f"{x!r}: <{two}>" for x in list(extra)[:3]]
    example = "{" + ", ".join(pairs) + "}"
    fix = (f"fix or drop those rows, or map every label onto the two classes with "
           f"`competition.label_map`, e.g. {example}.")
    # A label on a handful of rows is a typo or a stray line, not a class one could learn.
    if len(rows) <= 0.05 * len(per_row) or max(extra.values()) <= 2:
        raise KitError(
            f"{file}: task is binary, but besides its two classes {sorted(main)} column "
            f"{comp.label_column!r} has stray labels: rows per label {by_count(extra)} "
            f"({where}). To train on the two classes, {fix}"
        )
    raise KitError(
        f"{file}: task is binary, but column {comp.label_column!r} has {len(counts)} labels: "
        f"rows per label {by_count(counts)}. If the task has {len(counts)} classes, set "
        f"`competition.task: multiclass`. If only {sorted(main)} are classes, the others are on "
        f"{where}: {fix}"
    )


def _check_two_classes(per_row: list[list[str]], labels: list[str], comp: CompetitionParams,
                       df: pd.DataFrame, file: str) -> None:
    """Refuse a training file with fewer than two classes (a classifier cannot learn from it)."""
    counts = Counter(row[0] for row in per_row)
    absent = [x for x in labels if counts[x] == 0]
    if len(labels) - len(absent) >= 2:
        if absent:
            log.warning(f"{file}: no row has the label(s) {absent} of `competition.labels`: "
                        "the models will never predict them.")
        return
    fix = (f"Check that `competition.label_column` ({comp.label_column!r}) is the label column, "
           f"and that {file} is the whole training file, not a copy filtered to one class.")
    if comp.labels:
        raise KitError(
            f"{file}: `competition.labels` is {labels}, but no row has the label(s) {absent} "
            f"(rows per label: {by_count(counts)}). A classifier needs rows of at least two "
            f"classes. {fix}"
        )
    only = next(iter(counts), None)
    raise KitError(
        f"{file}: every row has the label {only!r} ({n_rows(len(per_row))}): the file holds only "
        f"one class, and a classifier needs at least two. {fix}"
    )
