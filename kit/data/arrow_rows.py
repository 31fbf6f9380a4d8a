"""Table rows and texts kept in Arrow: written batch by batch, mapped for random access, streamed
for whole passes.

A file is Arrow IPC (the random-access "file" format: record batches of `ROW_GROUP` rows and a
footer), written batch by batch and renamed into place, so a killed pass leaves no half file.
Reading has two ways, and the difference is what bounds memory at a million rows:

- `ArrowRows.mapped()` maps the file (`pyarrow.memory_map`): a row costs nothing until it is
  read, which suits random access (a text by index, a DataFrame's column of ids).
- `ArrowRows.iter_batches()` reads one record batch at a time with plain reads into a buffer
  that is freed after it (`pyarrow.OSFile`). Every page of a *mapped* file that a pass touches
  stays in the process's resident set until the mapping closes (it is page cache, but counted
  as RSS), so a pass over all rows goes this way.

Measured on the 1M-row CSV of bench/bench_data.py (1.06 GB; rows written, then texts rendered
and written, then every text read once): these streamed reads peaked at 308 MB RSS; Hugging
Face `datasets` (`Dataset.from_file` + batched `map` with a cache file + `iter`, which read
through the map) peaked at 2,310 MB. `bench/bench_data.py`'s rows step (the kit's own path
against `datasets`, each in a fresh process): 428 MB against 1,421 MB. Hence pyarrow alone.
"""

from __future__ import annotations

import bisect
import operator
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np
import pandas as pd
import pyarrow as pa

ROW_GROUP = 50_000  # rows per record batch: what a streamed pass holds at a time


def write_arrow_file(path: Path, schema: pa.Schema,
                     batches: Iterable[pa.RecordBatch | dict[str, list]]) -> int:
    """Write the batches (record batches, or dicts of column lists) to `path` atomically;
    returns the number of rows. No batch at all writes an empty file with the schema."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    rows = 0
    try:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            for batch in batches:
                if isinstance(batch, dict):
                    batch = pa.record_batch(batch, schema=schema)
                writer.write_batch(batch)
                rows += batch.num_rows
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return rows


class ArrowRows:
    """Rows in an Arrow IPC file (or, with no cache folder, an in-memory table)."""

    def __init__(self, source: Path | pa.Table, columns: list[str] | None = None):
        self.path = source if isinstance(source, Path) else None
        self._table = None if isinstance(source, Path) else source
        schema = self._reader_schema() if self.path else source.schema
        # `columns`: the ones to show (a column no record has is hidden, as a plain read
        # would not find it); the file keeps them all.
        self.columns = [c for c in (columns or schema.names) if c in schema.names]

    def __getstate__(self) -> dict[str, Any]:
        # Pickled (to a worker process), a file's rows travel as the path and are mapped again
        # there, not copied out of the map.
        return {**self.__dict__, "_table": None} if self.path else self.__dict__

    def _reader_schema(self) -> pa.Schema:
        with pa.OSFile(str(self.path)) as f:
            return pa.ipc.open_file(f).schema

    @property
    def num_rows(self) -> int:
        return self.mapped().num_rows

    def mapped(self) -> pa.Table:
        """The whole table, memory-mapped from the file (no copy; pages load when read)."""
        if self._table is None:
            self._table = pa.ipc.open_file(pa.memory_map(str(self.path), "r")).read_all()
        return self._table

    def iter_batches(self, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        """Record batches in order, read one at a time (not through the map; module docstring)."""
        columns = columns or self.columns
        if self.path is None:
            yield from (b.select(columns) for b in self.mapped().to_batches(ROW_GROUP))
            return
        with pa.OSFile(str(self.path)) as f:
            reader = pa.ipc.open_file(f)
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i).select(columns)

    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame whose text columns are Arrow-backed strings over the map
        (pandas' `str` dtype; missing cells NaN), not Python objects."""
        return self.mapped().select(self.columns).to_pandas()


class TextColumn(Sequence[str]):
    """A column of texts in Arrow, read as a sequence of `str` without a Python list of them.

    `positions` (ascending) selects rows of the underlying column. Iteration streams batches;
    an index or a slice reads through the map; `take` picks many rows in one streamed pass.
    """

    def __init__(self, rows: ArrowRows, column: str = "text",
                 positions: np.ndarray | None = None):
        self.rows = rows
        self.column = column
        self.positions = None if positions is None else np.asarray(positions, dtype=np.int64)
        self._views: list[tuple[np.ndarray, np.ndarray, pa.Array]] | None = None
        self._starts: list[int] = [0]

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_views": None}

    def __len__(self) -> int:
        return self.rows.num_rows if self.positions is None else len(self.positions)

    def _row(self, i: int) -> int:
        i = operator.index(i)
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"text {i} of {n}")
        i %= n
        return i if self.positions is None else int(self.positions[i])

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> list[str]: ...

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            column = self.rows.mapped().column(self.column)
            picked = np.arange(len(self))[i]
            if self.positions is not None:
                picked = self.positions[picked]
            return column.take(pa.array(picked, type=pa.int64())).to_pylist()
        return self._text_at(self._row(i))

    def _text_at(self, row: int) -> str:
        """One text through the map: the chunk's offsets and bytes as numpy views (a pyarrow
        scalar per text costs ~50x more, which a loop over 800k fold rows feels)."""
        if self._views is None:
            chunks = self.rows.mapped().column(self.column).chunks
            self._views = [(np.frombuffer(c.buffers()[1], dtype=np.int32)[c.offset:],
                            np.frombuffer(c.buffers()[2] or b"", dtype=np.uint8), c)
                           for c in chunks if len(c)]
            self._starts = np.cumsum([0, *(len(c) for _, _, c in self._views)]).tolist()
        k = bisect.bisect_right(self._starts, row) - 1
        offsets, data, chunk = self._views[k]
        j = row - self._starts[k]
        if chunk.null_count and not chunk.is_valid()[j].as_py():
            return None  # type: ignore[return-value]  # a null cell (never in rendered texts)
        return data[offsets[j] : offsets[j + 1]].tobytes().decode("utf-8")

    def iter_batches(self, size: int = ROW_GROUP) -> Iterator[list[str]]:
        """Lists of at most `size` texts, in order, one record batch read at a time."""
        pending: list[str] = []
        start = 0
        for batch in self.rows.iter_batches([self.column]):
            values = batch.column(0)
            if self.positions is not None:
                end = start + len(values)
                lo, hi = np.searchsorted(self.positions, [start, end])
                values = values.take(pa.array(self.positions[lo:hi] - start))
                start = end
            pending.extend(values.to_pylist())
            while len(pending) >= size:
                yield pending[:size]
                pending = pending[size:]
        if pending:
            yield pending

    def __iter__(self) -> Iterator[str]:
        for part in self.iter_batches():
            yield from part

    def take(self, indices: Sequence[int] | np.ndarray) -> list[str]:
        """The texts at `indices` (in that order), found in one streamed pass."""
        indices = np.asarray(indices, dtype=np.int64)
        indices = np.where(indices < 0, indices + len(self), indices)
        order = np.argsort(indices, kind="stable")
        wanted = indices[order]
        out: list[str] = [""] * len(indices)
        k, start = 0, 0
        for part in self.iter_batches():
            end = start + len(part)
            while k < len(wanted) and wanted[k] < end:
                out[order[k]] = part[wanted[k] - start]
                k += 1
            start = end
        if k < len(wanted):
            raise IndexError(f"text {int(wanted[k])} of {len(self)}")
        return out

    def tolist(self) -> list[str]:
        return list(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]  # a sequence compared by value

    def __repr__(self) -> str:
        where = self.rows.path or "memory"
        return f"TextColumn({len(self)} texts, Arrow {where})"


def text_batches(texts: Sequence[str], size: int) -> Iterator[list[str]]:
    """Lists of at most `size` texts: streamed from a TextColumn, else sliced."""
    if isinstance(texts, TextColumn):
        yield from texts.iter_batches(size)
        return
    for start in range(0, len(texts), size):
        yield [str(t) for t in texts[start : start + size]]
