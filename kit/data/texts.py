"""Rows to texts: the text columns joined through the template, and rows without any text.

Two inputs, one rule (`_cell_text` then `template.format`), so both give the same texts in the
same order: a DataFrame (a plain read) gives a list of str; Arrow rows (the streamed, cached
path, kit.data.arrow_rows) give a `TextColumn` rendered batch by batch into an Arrow file next
to the rows, with a `blank` flag per row, reused by every later load.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa

from kit.config.params import CompetitionParams
from kit.data.arrow_rows import ArrowRows, TextColumn, write_arrow_file
from kit.data.checks import first_ids, n_rows, require_columns
from kit.errors import KitError

log = logging.getLogger(__name__)

TEXTS_SCHEMA = pa.schema([("text", pa.string()), ("blank", pa.bool_())])


def _cell_text(value: object) -> str:
    """A text cell as text: missing (None, NaN, NA) is empty; numbers as pandas writes them."""
    if isinstance(value, str):
        return value
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return ""
    return str(value)


def template_of(comp: CompetitionParams, template: str | None) -> str:
    """The format string rows render through: `template`, the competition's, else the columns
    joined by a blank line."""
    if template is not None:
        return template
    if comp.text_template is not None:
        return comp.text_template
    return "\n\n".join("{" + c + "}" for c in comp.text_columns)


def _render(columns: list[list], names: list[str], template: str) -> list[str]:
    cells = [[_cell_text(v) for v in values] for values in columns]
    try:
        return [template.format(**dict(zip(names, row, strict=True)))
                for row in zip(*cells, strict=True)]
    except KeyError as err:
        raise KitError(
            f"`competition.text_template` uses {{{err.args[0]}}}, which is not one of "
            f"`competition.text_columns` {names}. Add the column or fix the template."
        ) from err


def _blank(columns: list[list], n: int) -> np.ndarray:
    blank = np.ones(n, dtype=bool)
    for values in columns:
        blank &= np.fromiter((not _cell_text(v).strip() for v in values), dtype=bool, count=n)
    return blank


def render_texts(df: pd.DataFrame, comp: CompetitionParams, file: str,
                 template: str | None = None) -> list[str]:
    """Join the text columns through the template; a missing cell renders as empty text."""
    require_columns(df, comp.text_columns, file)
    # Column by column as Python lists, no frame copies: a million long texts stay one copy.
    columns = [df[c].tolist() for c in comp.text_columns]
    return _render(columns, comp.text_columns, template_of(comp, template))


def render_records(rows: list[dict], comp: CompetitionParams,
                   template: str | None = None) -> list[str]:
    """`render_texts` of rows given as {column: value} dicts (a served request), no DataFrame."""
    names = comp.text_columns
    columns = [[row.get(c) for row in rows] for c in names]
    return _render(columns, names, template_of(comp, template))


def empty_texts(df: pd.DataFrame, comp: CompetitionParams, file: str) -> np.ndarray:
    """Row positions whose text columns are all missing or blank."""
    require_columns(df, comp.text_columns, file)
    return np.flatnonzero(_blank([df[c].tolist() for c in comp.text_columns], len(df)))


def texts_key(comp: CompetitionParams, template: str | None = None) -> str:
    """16 hex digits naming rendered texts: the text columns and the template."""
    blob = json.dumps({"columns": comp.text_columns, "template": template_of(comp, template)})
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def render_rows(rows: ArrowRows, comp: CompetitionParams, file: str,
                template: str | None = None) -> tuple[TextColumn, np.ndarray]:
    """The texts of Arrow rows and the positions of rows without text, streamed batch by batch.

    Rows in a file render into `<rows file>.texts-<key>.arrow` beside it (kept: a later load
    with the same columns and template maps it instead of rendering again); in-memory rows
    render into memory.
    """
    names, fmt = comp.text_columns, template_of(comp, template)
    require_columns(rows.columns, names, file)

    def batches() -> Iterator[dict[str, list]]:
        for batch in rows.iter_batches(names):
            columns = [batch.column(c).to_pylist() for c in names]
            yield {"text": _render(columns, names, fmt), "blank": _blank(columns, batch.num_rows)}

    if rows.path is None:
        parts = [pa.record_batch(b, schema=TEXTS_SCHEMA) for b in batches()]
        texts = ArrowRows(pa.Table.from_batches(parts, schema=TEXTS_SCHEMA))
    else:
        out = rows.path.with_name(f"{rows.path.stem}.texts-{texts_key(comp, template)}.arrow")
        if not out.is_file():
            write_arrow_file(out, TEXTS_SCHEMA, batches())
        texts = ArrowRows(out)
    blank = texts.mapped().column("blank").to_numpy(zero_copy_only=False)
    return TextColumn(texts, "text"), np.flatnonzero(blank)


def warn_dropped_train_texts(train: pd.DataFrame, empty: np.ndarray, comp: CompetitionParams,
                             file: str) -> None:
    """Say how many and which training rows have no text; refuse a file where all are empty."""
    if len(empty) == 0:
        return
    where = first_ids(train, empty.tolist(), comp.id_column)
    if len(empty) == len(train):
        raise KitError(
            f"{file}: every row has empty text in {comp.text_columns} ({n_rows(len(train))}, "
            f"{where}). Set `competition.text_columns` to the column(s) that hold the text; "
            f"the file has {list(train.columns)[:20]}."
        )
    log.warning(
        f"{file}: dropped {n_rows(len(empty))} of {len(train)} with empty or missing text in "
        f"{comp.text_columns} ({where}): there is nothing to learn from them. (Empty texts in "
        "the test file are kept and predicted.)"
    )


def drop_empty_train_texts(train: pd.DataFrame, comp: CompetitionParams,
                           file: str) -> pd.DataFrame:
    """Drop training rows without text (nothing to learn from), saying how many and which."""
    empty = empty_texts(train, comp, file)
    warn_dropped_train_texts(train, empty, comp, file)
    return train.drop(index=train.index[empty]) if len(empty) else train


def warn_empty_test_texts(test: pd.DataFrame, comp: CompetitionParams, file: str,
                          empty: np.ndarray | None = None) -> None:
    """Test rows without text stay: the submission needs every id, so they get predicted.

    `empty`: their positions when already known (render_rows), else found in `test`.
    """
    if empty is None:
        empty = empty_texts(test, comp, file)
    if len(empty):
        log.warning(
            f"{file}: {n_rows(len(empty))} of {len(test)} with empty or missing text in "
            f"{comp.text_columns} ({first_ids(test, empty.tolist(), comp.id_column)}): kept, "
            "and predicted from empty text, since the submission needs every id."
        )

