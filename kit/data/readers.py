"""Reading competition files: CSV (delimiter and encoding detected) and JSON lines (streamed)."""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from kit.errors import KitError

log = logging.getLogger(__name__)

JSONL_CHUNK_ROWS = 50_000


def read_table(path: Path, columns: list[str] | None = None, max_rows: int | None = None,
               ) -> pd.DataFrame:
    """Read a CSV, or JSON lines (optionally gzipped) in chunks with a progress bar."""
    if not path.exists():
        raise KitError(f"File not found: {path}. Check the file names under `competition:`.")
    name = path.name.lower()
    if name.endswith((".jsonl", ".json", ".jsonl.gz", ".json.gz", ".ndjson")):
        return _read_json_lines(path, columns, max_rows)
    try:
        return pd.read_csv(path, nrows=max_rows, low_memory=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise KitError(f"Could not read {path} as CSV: {err}") from err


def iter_json_lines(path: Path, progress: bool = True) -> Iterator[dict]:
    """Yield one record per line of a (gzipped) JSON-lines file, streamed, never all in memory.

    The progress bar counts bytes of the file on disk (compressed bytes for .gz), so its ETA
    is real for a multi-GB file.
    """
    gz = path.name.lower().endswith(".gz")
    with open(path, "rb") as raw, tqdm(total=os.path.getsize(path), unit="B", unit_scale=True,
                                       desc=f"reading {path.name}", disable=not progress) as bar:
        stream = gzip.GzipFile(fileobj=raw) if gz else raw
        for lineno, line in enumerate(io.TextIOWrapper(stream, encoding="utf-8"), 1):
            if lineno % 10_000 == 0:
                bar.update(raw.tell() - bar.n)
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as err:
                raise KitError(f"{path}, line {lineno}: not valid JSON ({err}).") from err
        bar.update(bar.total - bar.n)


def _read_json_lines(path: Path, columns: list[str] | None, max_rows: int | None) -> pd.DataFrame:
    # Streamed record by record so a multi-GB file (arXiv: 4.8 GB) only keeps the needed
    # columns in memory; pandas' read_json(lines=True, chunksize=...) would parse every field.
    frames, rows = [], []
    for n, record in enumerate(iter_json_lines(path)):
        if max_rows is not None and n >= max_rows:
            break
        rows.append({c: record.get(c) for c in columns} if columns else record)
        if len(rows) >= JSONL_CHUNK_ROWS:
            frames.append(pd.DataFrame(rows))
            rows = []
    frames.append(pd.DataFrame(rows))
    return pd.concat(frames, ignore_index=True)
