"""A cache of parsed, filtered, sampled table rows in Arrow, reused by every later notebook and run.

Where: `competition.cache_dir`, else `<output_dir>/.cache` under the project root (Kaggle's
/kaggle/input is read-only, and outputs/ is the one writable place every notebook shares).
`data/<file stem>-<key>.arrow` holds the rows (every cell as text, as the file wrote it; an
Arrow IPC file that later loads memory-map, kit.data.arrow_rows), a `.json` next to it what the
pass saw (records, malformed lines, rows per raw label code, seconds), and
`<file stem>-<key>.texts-<key>.arrow` the rendered texts (kit.data.texts.render_rows).

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
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from kit.core.atomic import write_json
from kit.core.envinfo import CACHE_EVENTS as EVENTS  # hits and misses, for env.json
from kit.data.arrow_rows import ROW_GROUP, ArrowRows, write_arrow_file
from kit.data.stream import Sampler, StreamStats, iter_chunks

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: Arrow IPC rows (1 was Parquet)
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
    """Rows of one file after the streamed pass (or from the cache), and what the pass saw.

    `rows` are Arrow (kit.data.arrow_rows): in the cache file, or in memory without a cache.
    """

    rows: ArrowRows
    info: dict[str, Any] = field(default_factory=dict)
    cache_hit: bool = False
    cache_file: Path | None = None

    @property
    def frame(self) -> pd.DataFrame:
        """The rows as a DataFrame of Arrow-backed text columns (missing cells NaN)."""
        return self.rows.frame()


def _as_text(value: Any) -> str | None:
    """Cells are stored as text: None stays None, 3.0 is "3", a list is its repr."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _text_batches(rows: list[list[Any]], columns: list[str], seen: set[str],
                  ) -> Iterator[dict[str, list]]:
    """Rows as column batches of `ROW_GROUP` text cells; notes the columns with a value."""
    for start in range(0, len(rows), ROW_GROUP):
        part = rows[start : start + ROW_GROUP]
        batch = {c: [_as_text(row[j]) for row in part] for j, c in enumerate(columns)}
        seen.update(c for c, values in batch.items() if c not in seen
                    and any(v is not None for v in values))
        yield batch


def read_streamed(path: Path, columns: list[str], cache_folder: Path | None, *,
                  label_column: str | None = None, key_of: Callable[[Any], str] | None = None,
                  per_class: int | None = None, max_rows: int | None = None, seed: int = 0,
                  skip_bad: bool = False, encoding: str | None = None,
                  delimiter: str | None = None, settings: dict[str, Any] | None = None,
                  code_counts: Callable[[], dict[str, int]] | None = None) -> StreamedTable:
    """Stream `path` once (sampling as asked) into Arrow rows, or map the cached result.

    Rows go to the Arrow file chunk by chunk as they are read (a sample, once the pass ends),
    so the pass holds one chunk, or the sample, never the file. `settings` are the extra
    params that shape the rows (the label rules); they join the key. `code_counts()` after the
    pass gives rows per raw label code, stored with the cache.
    """
    key = data = meta = None
    if cache_folder is not None:
        key = cache_key(path, {"columns": columns, "label_column": label_column,
                               "per_class": per_class, "max_rows": max_rows, "seed": seed,
                               "skip_bad": skip_bad, "encoding": encoding,
                               "delimiter": delimiter, **(settings or {})})
        stem = path.name.split(".")[0]
        data = cache_folder / "data" / f"{stem}-{key}.arrow"
        meta = data.with_suffix(".json")
        if data.is_file() and meta.is_file():
            EVENTS["data hit"] += 1
            info = json.loads(meta.read_text())
            rows = ArrowRows(data, info.get("columns"))
            log.info(f"{path.name}: {rows.num_rows} rows from the cache {data} (key {key}; "
                     f"the pass took {info.get('seconds', 0):.0f} s; memory-mapped).")
            return StreamedTable(rows, info, cache_hit=True, cache_file=data)
        EVENTS["data miss"] += 1
    started = time.perf_counter()
    stats = StreamStats()
    sampler = Sampler(key_of or (lambda _: ""), per_class, max_rows, seed)
    label_index = columns.index(label_column) if label_column in columns else None
    seen: set[str] = set()

    def batches() -> Iterator[dict[str, list]]:
        for chunk in iter_chunks(path, columns, stats, skip_bad=skip_bad, encoding=encoding,
                                 delimiter=delimiter):
            sampler.offer_chunk(chunk, label_index)
            if per_class is None:  # every row is kept: out as it comes
                yield from _text_batches(sampler.drain(), columns, seen)
            if sampler.full:
                break
        yield from _text_batches(sampler.drain(), columns, seen)

    schema = pa.schema([(c, pa.string()) for c in columns])
    if data is None:
        table = pa.Table.from_batches([pa.record_batch(b, schema=schema) for b in batches()],
                                      schema=schema)
        kept = table.num_rows
    else:
        kept = write_arrow_file(data, schema, batches())
    # A column no record has is missing, as a plain read would find it.
    present = [c for c in columns if c in seen] if kept else columns
    info = {"file": str(path), "bytes": stats.bytes, "records": stats.records,
            "rows_read": sampler.offered, "rows_kept": kept, "bad_records": stats.bad,
            "bad_lines": stats.bad_lines, "class_rows_read": dict(sampler.seen),
            "label_codes": dict(code_counts()) if code_counts else {},
            "columns": present, "seconds": round(time.perf_counter() - started, 3)}
    if stats.bad:
        shown = ", ".join(f"line {n} ({why})" for n, why in stats.bad_lines[:5])
        log.warning(f"{path}: skipped {stats.bad} malformed record(s): {shown}"
                    + (" ..." if stats.bad > 5 else "") + ".")
    if data is None or meta is None:
        return StreamedTable(ArrowRows(table, present), info)
    write_json(meta, info)
    log.info(f"{path.name}: {kept} of {info['rows_read']} rows kept in "
             f"{info['seconds']:.1f} s; cached as {data}.")
    return StreamedTable(ArrowRows(data, present), info, cache_file=data)


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
