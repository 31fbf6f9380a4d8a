"""Checks of a competition's tables that name the file, the column, the first rows and the fix."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from kit.data.readers import DELIMITERS
from kit.errors import KitError


def n_rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def by_count(counts: dict[str, int]) -> dict[str, int]:
    """Counts, largest first (ties by name)."""
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def first_ids(df: pd.DataFrame, rows: list[int], id_column: str, n: int = 5) -> str:
    """'first ids: [...]' of the rows at these positions (row numbers when there are no ids)."""
    if id_column in df:
        return f"first ids: {df[id_column].iloc[rows[:n]].tolist()}"
    return f"first rows (0 = the first after the header): {list(rows[:n])}"


def require_columns(table: pd.DataFrame | Iterable[str], columns: list[str], file: str) -> None:
    """Refuse a table (a DataFrame, or its column names) without `columns`, saying why."""
    names = list(table.columns if isinstance(table, pd.DataFrame) else table)
    missing = [c for c in columns if c not in names]
    if not missing:
        return
    for sep in DELIMITERS:  # a header read with the wrong delimiter is one long column name
        if any(set(missing) <= set(str(name).split(sep)) for name in names):
            raise KitError(
                f"{file}: missing column(s) {missing}; its header {names[:5]} looks "
                f"separated by {sep!r}. Set `competition.csv_delimiter: {sep!r}` in the params "
                "file (or remove it to have the delimiter detected)."
            )
    raise KitError(
        f"{file}: missing column(s) {missing}; it has {names[:20]}. "
        "Fix the column names under `competition:` in the params file."
    )


def check_ids(df: pd.DataFrame, id_column: str, file: str) -> None:
    """Ids must be unique."""
    require_columns(df, [id_column], file)
    dup = df[id_column].duplicated(keep=False)
    if dup.any():
        raise KitError(
            f"{file}: column {id_column!r} has {int(dup.sum())} rows with duplicate ids "
            f"(first: {df.loc[dup, id_column].head(5).tolist()}). Ids must be unique; drop the "
            "duplicates or set `competition.id_column` to the real id."
        )


def check_test_matches_sample(test: pd.DataFrame, sample: pd.DataFrame, id_column: str,
                              test_file: str, sample_file: str) -> None:
    """The test ids and the sample submission's ids must be the same set."""
    require_columns(sample, [id_column], sample_file)
    test_ids, sample_ids = set(test[id_column]), set(sample[id_column])
    if test_ids != sample_ids:
        only_test = sorted(test_ids - sample_ids, key=str)[:5]
        only_sample = sorted(sample_ids - test_ids, key=str)[:5]
        raise KitError(
            f"The ids of {test_file} and {sample_file} differ: {len(test_ids - sample_ids)} only "
            f"in test (first: {only_test}), {len(sample_ids - test_ids)} only in the sample "
            f"(first: {only_sample}). Use the files of one competition download."
        )
