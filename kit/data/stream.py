"""Streaming reads of multi-GB tables: records in chunks, bad records by line, a one-pass sample.

`iter_chunks` yields DataFrames of at most `CHUNK_ROWS` rows holding only the wanted columns, from
JSON lines (orjson when installed, else the json module; gzip, bz2 and xz decompressed on the
fly), CSV (pandas in chunks) or Parquet (pyarrow record batches). A malformed record (not JSON,
not an object, a CSV line with the wrong field count, a last line cut off mid-record) is counted
in `StreamStats` with its line number; with `skip_bad` False the first one is a KitError naming
the file and the line. `Sampler` keeps the first `max_rows` rows and, within them, at most
`per_class` rows of each class drawn uniformly by a seeded reservoir (Vitter's algorithm R per
class), so memory holds the sample, never the file.
"""

from __future__ import annotations

import bz2
import gzip
import json
import logging
import lzma
import random
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kit.data.readers import (
    UTF8,
    _encoding_guesses,
    _parser_error_message,
    _where,
    detect_delimiter,
    first_undecodable,
)
from kit.errors import KitError

try:  # 3-5x faster than the json module on arXiv-sized records; optional
    import orjson

    _loads: Callable[[bytes], Any] = orjson.loads
    _JSON_ERRORS: tuple[type[Exception], ...] = (orjson.JSONDecodeError, UnicodeDecodeError)
except ImportError:  # pragma: no cover - exercised where orjson is absent
    _loads = json.loads
    _JSON_ERRORS = (json.JSONDecodeError, UnicodeDecodeError)

log = logging.getLogger(__name__)

CHUNK_ROWS = 20_000
BAD_SHOWN = 20  # bad records listed by line; all are counted
_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
_JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
_BLANK = (b"\n", b"\r", b" ", b"\t", b"")


@dataclass
class StreamStats:
    """What one pass over a file saw."""

    records: int = 0  # well-formed records read
    bad: int = 0  # malformed records (skipped, or the first one raised)
    bad_lines: list[tuple[int, str]] = field(default_factory=list)  # the first BAD_SHOWN
    bytes: int = 0  # size of the file on disk

    def add_bad(self, line: int, reason: str) -> None:
        self.bad += 1
        if len(self.bad_lines) < BAD_SHOWN:
            self.bad_lines.append((line, reason))


def file_format(path: Path) -> str:
    """"jsonl", "csv" or "parquet", from the name (a compression suffix is looked through)."""
    name = path.name.lower()
    for suffix in _OPENERS:
        name = name.removesuffix(suffix)
    if name.endswith(_JSON_SUFFIXES):
        return "jsonl"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    return "csv"


def _bad(path: Path, line: int, reason: str, stats: StreamStats, skip_bad: bool) -> None:
    stats.add_bad(line, reason)
    if not skip_bad:
        raise KitError(
            f"{path}, line {line}: {reason}. Fix or delete that line, or set "
            "`competition.skip_bad_records: true` to skip malformed records (they are counted "
            "and their line numbers logged)."
        )


def iter_chunks(path: Path, columns: list[str], stats: StreamStats, *, skip_bad: bool = False,
                encoding: str | None = None, delimiter: str | None = None,
                ) -> Iterator[list[list[Any]]]:
    """Rows (lists of the wanted `columns`' values; absent ones None), chunk by chunk.

    Plain lists, not DataFrames: building a frame per chunk cost more than parsing the JSON.
    """
    if not path.exists():
        raise KitError(f"File not found: {path}. Check the file names under `competition:`.")
    stats.bytes = path.stat().st_size
    kind = file_format(path)
    if kind == "jsonl":
        yield from _json_chunks(path, columns, stats, skip_bad, encoding)
    elif kind == "parquet":
        yield from _parquet_chunks(path, columns, stats)
    else:
        yield from _csv_chunks(path, columns, stats, skip_bad, encoding, delimiter)


def _json_chunks(path: Path, columns: list[str], stats: StreamStats, skip_bad: bool,
                 encoding: str | None) -> Iterator[list[list[Any]]]:
    opener = _OPENERS.get(path.suffix.lower(), open)
    recode = encoding is not None and encoding.lower().replace("_", "-") not in ("utf-8", "utf8")
    rows: list[list[Any]] = []
    with opener(path, "rb") as stream:
        for lineno, line in enumerate(stream, 1):
            if line[:1] in _BLANK and not line.strip():  # strip() only where it can be blank
                continue
            try:
                record = _loads(line.decode(encoding) if recode else line)
            except _JSON_ERRORS as err:
                cut = not line.endswith(b"\n")
                reason = ("the file ends in the middle of a record (a truncated last line)"
                          if cut else f"not valid JSON ({err})")
                _bad(path, lineno, reason, stats, skip_bad)
                continue
            if not isinstance(record, dict):
                _bad(path, lineno, f"a JSON {type(record).__name__}, not an object", stats,
                     skip_bad)
                continue
            stats.records += 1
            rows.append([record.get(c) for c in columns])
            if len(rows) >= CHUNK_ROWS:
                yield rows
                rows = []
    if rows:
        yield rows


def _parquet_chunks(path: Path, columns: list[str], stats: StreamStats,
                    ) -> Iterator[list[list[Any]]]:
    import pyarrow.parquet as pq

    file = pq.ParquetFile(path)
    present = [c for c in columns if c in file.schema_arrow.names]
    for batch in file.iter_batches(batch_size=CHUNK_ROWS, columns=present):
        df = batch.to_pandas()
        stats.records += len(df)
        yield _rows(df.reindex(columns=columns))


_SKIPPED = re.compile(r"Skipping line (\d+): (.*)")


def _csv_chunks(path: Path, columns: list[str], stats: StreamStats, skip_bad: bool,
                encoding: str | None, delimiter: str | None) -> Iterator[list[list[Any]]]:
    encoding = encoding or _detected_encoding(path)
    sep = delimiter or detect_delimiter(path, encoding)
    reader = pd.read_csv(path, sep=sep, encoding=encoding, chunksize=CHUNK_ROWS, dtype=str,
                         keep_default_na=False, na_values=[""],
                         # no usecols: with it pandas lets a line with extra fields pass
                         on_bad_lines="warn" if skip_bad else "error")
    try:
        while True:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    chunk = next(reader)
                except StopIteration:
                    break
            for w in caught:  # pandas reports each skipped line as "Skipping line N: ..."
                for lineno, reason in _SKIPPED.findall(str(w.message)):
                    stats.add_bad(int(lineno), reason.strip())
            stats.records += len(chunk)
            yield _rows(chunk.reindex(columns=columns))
    except pd.errors.ParserError as err:
        found = re.search(r"line (\d+)", str(err))
        if found:
            stats.add_bad(int(found[1]), str(err).strip())
        raise KitError(_parser_error_message(path, sep, encoding, delimiter is None, err)
                       + " Or set `competition.skip_bad_records: true` to skip such lines "
                       "(counted, with their line numbers logged).") from err
    except UnicodeDecodeError as err:
        raise KitError(
            f"{path} is not valid {encoding} ({err}). Set `competition.encoding` to the file's "
            "encoding (e.g. 'cp1252' or 'latin-1')."
        ) from err
    finally:
        reader.close()


def _rows(df: pd.DataFrame) -> list[list[Any]]:
    """A frame's rows as lists, missing values as None."""
    return [[None if v is None or v != v else v for v in row]
            for row in df.itertuples(index=False, name=None)]


def _detected_encoding(path: Path) -> str:
    """UTF-8, else the guess kit.data.readers makes, said in a warning (one decoding scan of
    the file, at C speed, before the pass: a pass cannot switch encodings half way)."""
    bad = first_undecodable(path, UTF8)
    if bad is None:
        return UTF8
    guess = _encoding_guesses(path, bad[0])[0]
    log.warning(f"{path} is not UTF-8 ({_where(bad)}): read it as {guess} (detected). If its "
                f"text looks garbled, set `competition.encoding` to the right encoding; to "
                f"silence this warning, set it to {guess!r}.")
    return guess


class Sampler:
    """The first `max_rows` rows; per class at most `per_class`, by a seeded reservoir.

    Rows come back in file order. `key_of(label_cell)` gives a row's class (its stratum).
    """

    def __init__(self, key_of: Callable[[Any], str], per_class: int | None,
                 max_rows: int | None, seed: int):
        self.key_of = key_of
        self.per_class = per_class
        self.max_rows = max_rows
        self.rng = random.Random(seed)
        self.seen: Counter[str] = Counter()  # rows per class offered
        self.kept: dict[str, list[tuple[int, list[Any]]]] = {}
        self.offered = 0

    @property
    def full(self) -> bool:
        """True once `max_rows` rows were offered: the pass can stop."""
        return self.max_rows is not None and self.offered >= self.max_rows

    def offer_chunk(self, rows: list[list[Any]], label_index: int | None) -> None:
        """Offer a chunk's rows (stops at `max_rows`)."""
        if self.max_rows is not None:
            rows = rows[: self.max_rows - self.offered]
        cap, randrange, key_of = self.per_class, self.rng.randrange, self.key_of
        seen, kept, position = self.seen, self.kept, self.offered
        for row in rows:
            key = key_of(row[label_index] if label_index is not None else None)
            n = seen.get(key, 0)
            seen[key] = n + 1
            if cap is None or n < cap:
                bucket = kept.get(key)
                if bucket is None:
                    bucket = kept[key] = []
                bucket.append((position, row))
            else:
                j = randrange(n + 1)  # algorithm R: keep with probability cap / (n + 1)
                if j < cap:
                    kept[key][j] = (position, row)
            position += 1
        self.offered = position

    def drain(self) -> list[list[Any]]:
        """The rows kept so far, in file order, handed over (the sampler forgets them).

        Without `per_class` every offered row is kept: draining after each chunk streams them.
        """
        items = sorted((item for bucket in self.kept.values() for item in bucket),
                       key=lambda item: item[0])
        self.kept.clear()
        return [row for _, row in items]

    def frame(self, columns: list[str], cell: Callable[[Any], Any] = lambda v: v,
              ) -> pd.DataFrame:
        """The sample as a DataFrame of object columns (`cell` applied), in file order.

        Hands the rows over: the sampler is empty afterwards, so the values live only once.
        """
        items = sorted((item for bucket in self.kept.values() for item in bucket),
                       key=lambda item: item[0])
        self.kept.clear()
        data = {c: pd.Series([cell(row[j]) for _, row in items], dtype=object)
                for j, c in enumerate(columns)}
        return pd.DataFrame(data, columns=columns)


def stratified_sample(keys: np.ndarray | list, per_class: int, seed: int) -> np.ndarray:
    """In memory: positions of at most `per_class` rows per key (uniform, seeded), in order.

    The reference the streaming Sampler is tested against (same counts per class).
    """
    keys = pd.Series(list(keys))
    picked = keys.groupby(keys, sort=False).apply(
        lambda g: g.sample(n=min(per_class, len(g)), random_state=seed))
    return np.sort(np.asarray(picked.index.get_level_values(-1)))
