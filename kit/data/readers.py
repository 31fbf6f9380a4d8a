"""Reading competition files: CSV (delimiter and encoding detected) and JSON lines (streamed).

A CSV's delimiter is `competition.csv_delimiter`, else sniffed from the file's first 64 KB among
, ; tab |. Its encoding is `competition.encoding`, else UTF-8 (with or without BOM), and a file
that is not UTF-8 is read in the encoding charset-normalizer detects, with a warning that names
it. A file that still cannot be read is a KitError naming the file, the line or byte, and the
setting that fixes it.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import io
import json
import logging
import lzma
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import pandas as pd
from tqdm.auto import tqdm

from kit.errors import KitError

log = logging.getLogger(__name__)

JSONL_CHUNK_ROWS = 50_000
DELIMITERS = ",;\t|"
SNIFF_BYTES = 64 * 1024
DETECT_BYTES = 1024 * 1024  # charset detection reads this much from the start (and the bad spot)
UTF8 = "utf-8-sig"  # UTF-8 that also drops a byte-order mark (Excel writes one)
_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def read_table(path: Path, columns: list[str] | None = None, max_rows: int | None = None,
               delimiter: str | None = None, encoding: str | None = None,
               id_column: str | None = None) -> pd.DataFrame:
    """Read a CSV, or JSON lines (optionally gzipped) in chunks with a progress bar.

    `delimiter` and `encoding` None: detected (see the module docstring). `id_column` keeps its
    values as written (see `ids_as_written`).
    """
    if not path.exists():
        raise KitError(f"File not found: {path}. Check the file names under `competition:`.")
    name = path.name.lower()
    if name.endswith((".jsonl", ".json", ".jsonl.gz", ".json.gz", ".ndjson")):
        df = _read_json_lines(path, columns, max_rows, encoding)
    else:
        df = read_csv(path, max_rows, delimiter, encoding, id_column=id_column)
    if id_column in df:
        df[id_column] = ids_as_written(df[id_column])
    return df


_PLAIN_INT = re.compile(r"^(0|-?[1-9][0-9]*)$")


def ids_as_written(values: pd.Series) -> pd.Series:
    """Ids as the file writes them: integers if every id is a plain integer, else text.

    Parsed as numbers, arXiv's "2101.00010" would become 2101.0001 and "007" 7, so the
    submission would carry ids Kaggle does not know; a JSON file's 5 and a CSV's "5" are equal.
    """
    text = [None if pd.isna(v) else v if isinstance(v, str) else str(v)
            for v in values.tolist()]
    if text and all(isinstance(t, str) and _PLAIN_INT.match(t) for t in text):
        return pd.Series([int(t) for t in text], index=values.index, dtype="int64")
    return pd.Series(text, index=values.index, dtype=object)


def read_csv(path: Path, max_rows: int | None = None, delimiter: str | None = None,
             encoding: str | None = None, id_column: str | None = None) -> pd.DataFrame:
    """Read a CSV with the given (or detected) delimiter and encoding."""
    if encoding is not None:
        _check_codec(encoding)
        try:
            return _read_csv_as(path, encoding, delimiter, max_rows, id_column)
        except UnicodeError as err:
            bad = first_undecodable(path, encoding)
            raise KitError(
                f"{path}: {_where(bad) if bad else err} is not valid {encoding} "
                f"(`competition.encoding` is {encoding!r}). Set `competition.encoding` to the "
                "file's encoding (e.g. 'cp1252' or 'latin-1' for Western European text saved by "
                "Windows or Excel), or remove it to have the encoding detected."
            ) from err
    try:
        return _read_csv_as(path, UTF8, delimiter, max_rows, id_column)
    except UnicodeError as err:
        bad = first_undecodable(path, UTF8)
        where = _where(bad) if bad else str(err)
    for guess in _encoding_guesses(path, bad[0] if bad else 0):
        try:
            df = _read_csv_as(path, guess, delimiter, max_rows, id_column)
        except UnicodeError:
            continue
        log.warning(
            f"{path} is not UTF-8 ({where}): read it as {guess} (detected). If its text looks "
            f"garbled, set `competition.encoding` to the right encoding; to silence this "
            f"warning, set it to {guess!r}."
        )
        return df
    raise AssertionError("latin-1 decodes any bytes")  # the last guess never fails


def _read_csv_as(path: Path, encoding: str, delimiter: str | None, max_rows: int | None,
                 id_column: str | None = None) -> pd.DataFrame:
    sep = delimiter or detect_delimiter(path, encoding)
    try:
        df = pd.read_csv(path, sep=sep, encoding=encoding, nrows=max_rows, low_memory=False,
                         dtype={id_column: str} if id_column else None)
    except pd.errors.EmptyDataError as err:
        raise KitError(
            f"{path} is empty: not even a header line. Download the competition's files again, "
            "or check the file names under `competition:`."
        ) from err
    except pd.errors.ParserError as err:
        raise KitError(_parser_error_message(path, sep, encoding, delimiter is None,
                                             err)) from err
    if delimiter is None and sep != ",":
        log.info(f"{path.name}: fields separated by {sep!r} (detected; "
                 "`competition.csv_delimiter` overrides).")
    return df


def detect_delimiter(path: Path, encoding: str = UTF8) -> str:
    """The field delimiter among , ; tab | sniffed from the first 64 KB; ',' if unclear."""
    head = _head(path, SNIFF_BYTES)
    if not head:
        return ","
    text = head.decode(encoding, errors="replace")
    if len(head) == SNIFF_BYTES:  # a cut last line would spoil the per-line counts
        text = text[: text.rfind("\n") + 1] or text
    try:
        return csv.Sniffer().sniff(text, delimiters=DELIMITERS).delimiter
    except csv.Error:  # one column, or no consistent delimiter: pandas' default
        return ","


def first_undecodable(path: Path, encoding: str) -> tuple[int, int, int] | None:
    """(byte offset, byte value, line number) of the first byte `encoding` cannot decode."""
    decoder = codecs.getincrementaldecoder(encoding)()
    offset, line = 0, 1
    with _open_bytes(path) as stream:
        if stream is None:
            return None
        while True:
            chunk = stream.read(1 << 20)
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as err:
                # err.object is the tail of the bytes fed so far (buffered bytes + this chunk)
                at = offset + len(chunk) - len(err.object) + err.start
                line += chunk[: max(0, at - offset)].count(b"\n")
                return at, err.object[err.start], line
            except UnicodeError:  # e.g. UTF-16 without a byte-order mark
                return offset, (chunk or b"\0")[0], line
            if not chunk:
                return None
            offset += len(chunk)
            line += chunk.count(b"\n")


def _where(bad: tuple[int, int, int]) -> str:
    offset, value, line = bad
    return f"byte 0x{value:02x} at offset {offset}, line {line}"


def _encoding_guesses(path: Path, bad_offset: int) -> list[str]:
    """Encodings to try: cp1252 when charset-normalizer finds it plausible, else its best guess;
    then cp1252, then latin-1 (which decodes any bytes).

    cp1252 (Windows' Western European default, a superset of latin-1's letters) is the usual
    non-UTF-8 file on Kaggle, and on little text charset-normalizer's own pick is a coin toss
    among look-alikes: it reads a small French latin-1 file as cp775 or cp1250 ("à" becomes
    "ŕ"), and "ééé" as cp1006 (Urdu). On a page of Russian or Greek it is right, and cp1252 is
    not among its candidates.
    """
    with _open_bytes(path) as stream:
        sample = stream.read(DETECT_BYTES) if stream else b""
        if stream and bad_offset > len(sample):
            stream.seek(max(bad_offset - 32 * 1024, len(sample)))
            sample += b"\n" + stream.read(64 * 1024)
    guesses = [*_charset_normalizer_guesses(sample), "cp1252", "latin-1"]
    utf8 = {"utf-8", "utf-8-sig", "ascii"}  # already failed
    return [g for g in dict.fromkeys(guesses) if codecs.lookup(g).name not in utf8]


def _charset_normalizer_guesses(sample: bytes) -> list[str]:
    try:
        import charset_normalizer
    except ImportError:  # not a declared dependency (it comes with requests): cp1252, latin-1
        return []
    ranked = list(charset_normalizer.from_bytes(sample)) if sample else []
    if not ranked:
        return []
    top = ranked[0]
    # No language recognised (a few accented letters in English text): its pick is a coin toss.
    unsure = top.coherence == 0
    plausible = any("cp1252" in m.could_be_from_charset and m.chaos <= top.chaos + 0.01
                    for m in ranked)
    return ["cp1252", top.encoding] if unsure or plausible else [top.encoding]


def _parser_error_message(path: Path, sep: str, encoding: str, detected: bool,
                          err: Exception) -> str:
    how = "detected" if detected else "from `competition.csv_delimiter`"
    sniffed = sep if detected else detect_delimiter(path, encoding)
    other = (f"The file looks separated by {sniffed!r}: set `competition.csv_delimiter: "
             f"{sniffed!r}`" if sniffed != sep else "If the file uses another delimiter, set "
             "`competition.csv_delimiter` to it (one of ',' ';' '\\t' '|')")
    found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(err))
    if not found:
        return (f"{path}: not readable as CSV with fields separated by {sep!r} ({how}): "
                f"{str(err).strip()}. {other}.")
    expected, line, saw = found.groups()
    return (
        f"{path}, line {line}: {saw} fields, but the lines before it have {expected} (fields "
        f"separated by {sep!r}, {how}). {other}; if the delimiter is right, line {line} is "
        f"broken: a text containing {sep!r} must be in double quotes."
    )


def _check_codec(encoding: str) -> None:
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise KitError(
            f"`competition.encoding` is {encoding!r}, which Python does not know. Use a codec "
            "name such as 'utf-8', 'cp1252', 'latin-1' or 'utf-16', or remove it to have the "
            "encoding detected."
        ) from None


@contextmanager
def _open_bytes(path: Path) -> Iterator[BinaryIO | None]:
    """The file's (decompressed) bytes; None for a compression we cannot peek into."""
    suffix = path.suffix.lower()
    if suffix in (".zip", ".zst", ".tar"):
        yield None
        return
    with _OPENERS.get(suffix, open)(path, "rb") as stream:
        yield stream


def _head(path: Path, n: int) -> bytes | None:
    with _open_bytes(path) as stream:
        return stream.read(n) if stream is not None else None


def iter_json_lines(path: Path, progress: bool = True, encoding: str | None = None,
                    ) -> Iterator[dict]:
    """Yield one record per line of a (gzipped) JSON-lines file, streamed, never all in memory.

    The progress bar counts bytes of the file on disk (compressed bytes for .gz), so its ETA
    is real for a multi-GB file.
    """
    gz = path.name.lower().endswith(".gz")
    encoding = encoding or "utf-8"
    with open(path, "rb") as raw, tqdm(total=os.path.getsize(path), unit="B", unit_scale=True,
                                       desc=f"reading {path.name}", disable=not progress) as bar:
        stream = gzip.GzipFile(fileobj=raw) if gz else raw
        try:
            for lineno, line in enumerate(io.TextIOWrapper(stream, encoding=encoding), 1):
                if lineno % 10_000 == 0:
                    bar.update(raw.tell() - bar.n)
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as err:
                    raise KitError(f"{path}, line {lineno}: not valid JSON ({err}).") from err
        except UnicodeDecodeError as err:
            bad = first_undecodable(path, encoding)
            raise KitError(
                f"{path}: {_where(bad) if bad else err} is not valid {encoding}. JSON lines are "
                "UTF-8; if this file is not, set `competition.encoding` to its encoding (e.g. "
                "'cp1252' or 'latin-1')."
            ) from err
        bar.update(bar.total - bar.n)


def _read_json_lines(path: Path, columns: list[str] | None, max_rows: int | None,
                     encoding: str | None) -> pd.DataFrame:
    # Streamed record by record so a multi-GB file (arXiv: 4.8 GB) only keeps the needed
    # columns in memory; pandas' read_json(lines=True, chunksize=...) would parse every field.
    frames, rows = [], []
    for n, record in enumerate(iter_json_lines(path, encoding=encoding)):
        if max_rows is not None and n >= max_rows:
            break
        rows.append({c: record.get(c) for c in columns} if columns else record)
        if len(rows) >= JSONL_CHUNK_ROWS:
            frames.append(pd.DataFrame(rows))
            rows = []
    frames.append(pd.DataFrame(rows))
    return pd.concat(frames, ignore_index=True)
