"""A Parquet cache of parsed, filtered, sampled table rows, reused by every later notebook and run.

Where: `competition.cache_dir`, else `<output_dir>/.cache` under the project root (Kaggle's
/kaggle/input is read-only, and outputs/ is the one writable place every notebook shares).
`data/<file stem>-<key>.parquet` holds the rows (every cell as text, as the file wrote it) and a
`.json` next to it what the pass saw (records, malformed lines, rows per raw label code, seconds).

The key is a SHA-256 over the input file's fingerprint and the settings that shape the rows
(columns, label rules, sample size, seed, bad-record policy, encoding, delimiter, a format
version). The fingerprint is the file's name, size, modification time (ns) and a BLAKE2b hash
of its first and last MiB: cheap on a 5 GB file, and any edit, append, truncation or fresh
download changes it. Writes are atomic, so a killed pass leaves no half cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from kit.core.atomic import write_json
from kit.core.envinfo import CACHE_EVENTS as EVENTS  # hits and misses, for env.json
from kit.data.stream import Sampler, StreamStats, iter_chunks

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
EDGE_BYTES = 1 << 20


def cache_root(cache_dir: str | None, output_dir: str, root: Path) -> Path:
    """The cache folder: `cache_dir`, else `<output_dir>/.cache`, relative to the project root."""
    folder = Path(cache_dir) if cache_dir else Path(output_dir) / ".cache"
    return folder if folder.is_absolute() else root / folder


def file_fingerprint(path: Path) -> dict[str, Any]:
    """Name, size, mtime (ns) and BLAKE2b of the first and last MiB of `path`."""
    st = path.stat()
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        digest.update(fh.read(EDGE_BYTES))
        if st.st_size > EDGE_BYTES:
            fh.seek(max(EDGE_BYTES, st.st_size - EDGE_BYTES))
            digest.update(fh.read(EDGE_BYTES))
    return {"name": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "edges_blake2b": digest.hexdigest()}


def cache_key(path: Path, settings: dict[str, Any]) -> str:
    """24 hex digits of SHA-256 over the file's fingerprint and the settings."""
    blob = json.dumps({"file": file_fingerprint(path), "settings": settings,
                       "version": FORMAT_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


@dataclass
class StreamedTable:
    """Rows of one file after the streamed pass (or from the cache), and what the pass saw."""

    frame: pd.DataFrame
    info: dict[str, Any] = field(default_factory=dict)
    cache_hit: bool = False
    cache_file: Path | None = None


def _as_text(value: Any) -> str | None:
    """Cells are stored as text: None stays None, 3.0 is "3", a list is its repr."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


ROW_GROUP = 50_000  # rows converted at a time between Python strings and Arrow


def _write_parquet(path: Path, frame: pd.DataFrame) -> None:
    """Text columns to Parquet a row group at a time (one Arrow copy of 50k rows, not of all),
    atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(c, pa.string()) for c in frame.columns])
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for start in range(0, max(len(frame), 1), ROW_GROUP):
                part = frame.iloc[start : start + ROW_GROUP]
                writer.write_table(pa.table({c: pa.array(part[c].tolist(), type=pa.string())
                                             for c in frame.columns}, schema=schema))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_parquet_as_objects(path: Path) -> pd.DataFrame:
    """The cache file as object columns of Python strings (None for missing), row group by
    row group, so the whole file never sits in memory twice."""
    import pyarrow.parquet as pq

    file = pq.ParquetFile(path)
    values: dict[str, list] = {c: [] for c in file.schema_arrow.names}
    for batch in file.iter_batches(batch_size=ROW_GROUP):
        for c in values:
            values[c].extend(batch.column(c).to_pylist())
    return pd.DataFrame({c: pd.Series(v, dtype=object) for c, v in values.items()},
                        columns=list(values))


def read_streamed(path: Path, columns: list[str], cache_folder: Path | None, *,
                  label_column: str | None = None, key_of: Callable[[Any], str] | None = None,
                  per_class: int | None = None, max_rows: int | None = None, seed: int = 0,
                  skip_bad: bool = False, encoding: str | None = None,
                  delimiter: str | None = None, settings: dict[str, Any] | None = None,
                  code_counts: Callable[[], dict[str, int]] | None = None) -> StreamedTable:
    """Stream `path` once (sampling as asked) into a DataFrame, or read the cached result.

    `settings` are the extra params that shape the rows (the label rules); they join the key.
    `code_counts()` after the pass gives rows per raw label code, stored with the cache.
    """
    key = None
    if cache_folder is not None:
        key = cache_key(path, {"columns": columns, "label_column": label_column,
                               "per_class": per_class, "max_rows": max_rows, "seed": seed,
                               "skip_bad": skip_bad, "encoding": encoding,
                               "delimiter": delimiter, **(settings or {})})
        stem = path.name.split(".")[0]
        data = cache_folder / "data" / f"{stem}-{key}.parquet"
        meta = data.with_suffix(".json")
        if data.is_file() and meta.is_file():
            EVENTS["data hit"] += 1
            info = json.loads(meta.read_text())
            frame = _read_parquet_as_objects(data)
            log.info(f"{path.name}: {len(frame)} rows from the cache {data} (key {key}; "
                     f"the pass took {info.get('seconds', 0):.0f} s).")
            return StreamedTable(frame, info, cache_hit=True, cache_file=data)
        EVENTS["data miss"] += 1
    started = time.perf_counter()
    stats = StreamStats()
    sampler = Sampler(key_of or (lambda _: ""), per_class, max_rows, seed)
    for chunk in iter_chunks(path, columns, stats, skip_bad=skip_bad, encoding=encoding,
                             delimiter=delimiter):
        sampler.offer_chunk(chunk, columns.index(label_column)
                            if label_column in columns else None)
        if sampler.full:
            break
    frame = sampler.frame(columns, _as_text)
    if len(frame):  # a column no record has is missing, as a plain read would find it
        frame = frame[[c for c in frame.columns if frame[c].notna().any()]]
    info = {"file": str(path), "bytes": stats.bytes, "records": stats.records,
            "rows_read": sampler.offered, "rows_kept": len(frame), "bad_records": stats.bad,
            "bad_lines": stats.bad_lines, "class_rows_read": dict(sampler.seen),
            "label_codes": dict(code_counts()) if code_counts else {},
            "seconds": round(time.perf_counter() - started, 3)}
    if stats.bad:
        shown = ", ".join(f"line {n} ({why})" for n, why in stats.bad_lines[:5])
        log.warning(f"{path}: skipped {stats.bad} malformed record(s): {shown}"
                    + (" ..." if stats.bad > 5 else "") + ".")
    if cache_folder is None or key is None:
        return StreamedTable(frame, info)
    data.parent.mkdir(parents=True, exist_ok=True)
    _write_parquet(data, frame)
    write_json(meta, info)
    log.info(f"{path.name}: {info['rows_kept']} of {info['rows_read']} rows kept in "
             f"{info['seconds']:.1f} s; cached as {data}.")
    return StreamedTable(frame, info, cache_file=data)



STREAM_BYTES = 64 * 1024 * 1024  # `competition.cache: auto` streams and caches files this big


def load_train_rows(path: Path, columns: list[str], params: Any, root: Path,
                    ) -> StreamedTable | None:
    """The training rows through the streamed pass and the cache, or None for a plain read.

    Streamed when `competition.cache` is on, or when it is auto and the file is >= 64 MB or a
    sample / bad-record skipping is asked; cached unless `competition.cache` is off.
    """
    from kit.data.labelmap import LabelKeys

    comp = params.competition
    sampled = comp.sample_per_class is not None or comp.skip_bad_records
    big = path.exists() and path.stat().st_size >= STREAM_BYTES
    if not (comp.cache == "on" or sampled or (comp.cache == "auto" and big)):
        return None
    folder = None if comp.cache == "off" else cache_root(comp.cache_dir, params.output_dir, root)
    keys = LabelKeys(comp)
    settings = {"task": comp.task, "label_delimiter": comp.label_delimiter,
                "label_map": comp.label_map}
    return read_streamed(path, columns, folder, label_column=comp.label_column, key_of=keys,
                         per_class=comp.sample_per_class, max_rows=comp.max_rows,
                         seed=params.seed, skip_bad=comp.skip_bad_records,
                         encoding=comp.encoding, delimiter=comp.csv_delimiter,
                         settings=settings, code_counts=lambda: keys.codes)



def load_test_rows(path: Path, columns: list[str], params: Any, root: Path,
                   train_streamed: bool) -> StreamedTable | None:
    """The test rows streamed and cached alongside a streamed training file, else None.

    Every test row is kept (the submission needs every id), and a malformed one is an error.
    """
    comp = params.competition
    if not train_streamed or comp.cache == "off":
        return None
    return read_streamed(path, columns, cache_root(comp.cache_dir, params.output_dir, root),
                         encoding=comp.encoding, delimiter=comp.csv_delimiter)


TOKEN_CACHE_ROWS = 100_000  # `competition.cache: auto` caches tokens of this many texts or more


def token_cache_dir(params: Any, root: Path, streamed: bool, rows: int) -> Path | None:
    """Where tokenised texts are cached, or None: `competition.cache` on; or auto with the data
    streamed or >= 100k training texts (below that, tokenising takes seconds)."""
    comp = params.competition
    if comp.cache == "off" or (comp.cache == "auto" and not streamed
                               and rows < TOKEN_CACHE_ROWS):
        return None
    return cache_root(comp.cache_dir, params.output_dir, root) / "tokens"
