"""Competition data: find the files, read them, check them, and turn rows into texts and labels.

Data is found, in order: `competition.data_dir`; `/kaggle/input/<slug>` on Kaggle;
`data/<slug>` under the project root (demo competitions are built there on first use); else
`kaggle competitions download`. Every check that fails names the file, the column, the first
offending rows, and the fix.
"""

from __future__ import annotations

import ast
import gzip
import io
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from kit.config.params import CompetitionParams, Params
from kit.errors import KitError

log = logging.getLogger(__name__)

KAGGLE_INPUT = Path("/kaggle/input")
JSONL_CHUNK_ROWS = 50_000


@dataclass
class Competition:
    """One competition's data, checked and ready for models."""

    slug: str
    folder: Path
    task: str
    labels: list[str]  # class names, in the order of the probability columns
    train: pd.DataFrame
    test: pd.DataFrame
    sample_submission: pd.DataFrame
    train_texts: list[str]
    test_texts: list[str]
    y: np.ndarray  # ints (n,) for binary/multiclass; multi-hot (n, K) for multilabel
    id_column: str
    label_column: str
    answer_key: pd.DataFrame | None = None

    @property
    def train_ids(self) -> np.ndarray:
        return self.train[self.id_column].to_numpy()

    @property
    def test_ids(self) -> np.ndarray:
        return self.test[self.id_column].to_numpy()


def find_project_root(start: Path | None = None) -> Path:
    """The folder holding `params/` (the repo root), walking up from `start` (default: cwd).

    `COMPKIT_ROOT` overrides; with no `params/` anywhere above, the start folder itself.
    """
    if os.environ.get("COMPKIT_ROOT"):
        return Path(os.environ["COMPKIT_ROOT"]).resolve()
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "params").is_dir():
            return folder
    return start


def locate_data(comp: CompetitionParams, root: Path) -> Path:
    """Find (or build, or download) the competition folder; see the module docstring."""
    from kit.data import demos
    from kit.kaggle import cli as kaggle_cli

    tried = []
    if comp.data_dir:
        folder = Path(comp.data_dir)
        folder = folder if folder.is_absolute() else root / folder
        if not folder.is_dir():
            raise KitError(
                f"`competition.data_dir` is {comp.data_dir!r} but {folder} is not a folder. "
                f"Point it at the folder holding {comp.train_file}, or remove it to search "
                f"/kaggle/input/{comp.slug} and data/{comp.slug}."
            )
        return folder
    for folder in (KAGGLE_INPUT / comp.slug, KAGGLE_INPUT / "competitions" / comp.slug):
        tried.append(str(folder))
        if (folder / comp.train_file).exists():
            return folder
    local = root / "data" / comp.slug
    tried.append(str(local))
    if (local / comp.train_file).exists():
        return local
    if comp.slug in demos.DEMOS:
        log.info(f"Building the offline demo competition {comp.slug!r} in {local} ...")
        return demos.build_demo(comp.slug, root / "data")
    log.warning(f"{comp.train_file} not found in {', '.join(tried)}; trying the kaggle download.")
    return kaggle_cli.download_competition(comp.slug, local)


def read_table(path: Path, columns: list[str] | None = None, max_rows: int | None = None,
               id_column: str | None = None) -> pd.DataFrame:
    """Read a CSV, or JSON lines (optionally gzipped) in chunks with a progress bar.

    `id_column` keeps its values as written (see `ids_as_written`).
    """
    if not path.exists():
        raise KitError(f"File not found: {path}. Check the file names under `competition:`.")
    name = path.name.lower()
    if name.endswith((".jsonl", ".json", ".jsonl.gz", ".json.gz", ".ndjson")):
        df = _read_json_lines(path, columns, max_rows)
    else:
        try:
            df = pd.read_csv(path, nrows=max_rows, low_memory=False,
                             dtype={id_column: str} if id_column else None)
        except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
            raise KitError(f"Could not read {path} as CSV: {err}") from err
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


def render_texts(df: pd.DataFrame, comp: CompetitionParams, file: str,
                 template: str | None = None) -> list[str]:
    """Join the text columns through the template; empty or missing texts are errors."""
    template = template or comp.text_template
    _require_columns(df, comp.text_columns, file)
    if template is None:
        template = "\n\n".join("{" + c + "}" for c in comp.text_columns)
    frame = df[comp.text_columns]
    blank = frame.astype(str).apply(lambda col: col.str.strip() == "")
    missing = frame.isna().any(axis=1) | blank.all(axis=1)
    if missing.any():
        bad = df.loc[missing, comp.id_column].head(5).tolist() if comp.id_column in df else []
        raise KitError(
            f"{file}: {int(missing.sum())} rows have empty or missing text in "
            f"{comp.text_columns} (first ids: {bad}). Drop or fill those rows before the run, "
            "e.g. df[col] = df[col].fillna('')."
        )
    try:
        return [template.format(**row) for row in frame.astype(str).to_dict("records")]
    except KeyError as err:
        raise KitError(
            f"`competition.text_template` uses {{{err.args[0]}}}, which is not one of "
            f"`competition.text_columns` {comp.text_columns}. Add the column or fix the template."
        ) from err


def map_label(raw: str, label_map: dict[str, str]) -> str | None:
    """Map a raw label: exact match first, then the longest matching prefix; None if neither."""
    if raw in label_map:
        return label_map[raw]
    best = max((k for k in label_map if raw.startswith(k)), key=len, default=None)
    return label_map[best] if best is not None else None


def split_labels(value: object, delimiter: str | None) -> list[str]:
    """One cell of a multilabel column as a list: a list, a list literal, or delimited text."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(v) for v in value]
    text = str(value).strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            return [str(v) for v in ast.literal_eval(text)]
        except (ValueError, SyntaxError):
            pass
    parts = text.split(delimiter) if delimiter is not None else text.split()
    return [p.strip() for p in parts if p.strip()]


def encode_labels(df: pd.DataFrame, comp: CompetitionParams, file: str,
                  ) -> tuple[np.ndarray, list[str]]:
    """Turn the label column into ints (or multi-hot) and the ordered class names."""
    col = comp.label_column
    _require_columns(df, [col], file)
    nan = df[col].isna()
    if nan.any():
        raise KitError(
            f"{file}: column {col!r} has {int(nan.sum())} missing labels (first ids: "
            f"{df.loc[nan, comp.id_column].head(5).tolist()}). Drop those rows or fill them."
        )
    if comp.task == "multilabel":
        per_row = [split_labels(v, comp.label_delimiter) for v in df[col]]
    else:
        per_row = [[_label_str(v)] for v in df[col]]
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
                f"map (first raw values: {raws}). Add exact keys or prefixes for them."
            )
    labels = comp.labels or _infer_labels(per_row, comp)
    index = {name: i for i, name in enumerate(labels)}
    outside = [i for i, row in enumerate(per_row) if any(x not in index for x in row)]
    if outside:
        first = [per_row[i] for i in outside[:5]]
        raise KitError(
            f"{file}: {len(outside)} rows have labels outside `competition.labels` {labels} "
            f"(first: {first} at ids {df[comp.id_column].iloc[outside[:5]].tolist()}). "
            "Add them to `competition.labels` or fix the rows."
        )
    if comp.task == "multilabel":
        y = np.zeros((len(df), len(labels)), dtype=np.int64)
        for i, row in enumerate(per_row):
            y[i, [index[x] for x in row]] = 1
    else:
        y = np.array([index[row[0]] for row in per_row], dtype=np.int64)
    return y, labels


def _label_str(value: object) -> str:
    """Labels compare as text; 1.0 read from a CSV with NaNs elsewhere is still "1"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _infer_labels(per_row: list[list[str]], comp: CompetitionParams) -> list[str]:
    seen = sorted({x for row in per_row for x in row})
    if comp.task != "binary":
        return seen
    if len(seen) != 2:
        raise KitError(
            f"task is binary but the labels seen in train are {seen}. Set `competition.task` to "
            "multiclass, or list the two labels in `competition.labels`."
        )
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


def _require_columns(df: pd.DataFrame, columns: list[str], file: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise KitError(
            f"{file}: missing column(s) {missing}; it has {list(df.columns)[:20]}. "
            "Fix the column names under `competition:` in the params file."
        )


def _check_ids(df: pd.DataFrame, id_column: str, file: str) -> None:
    _require_columns(df, [id_column], file)
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
    _require_columns(sample, [id_column], sample_file)
    test_ids, sample_ids = set(test[id_column]), set(sample[id_column])
    if test_ids != sample_ids:
        only_test = sorted(test_ids - sample_ids, key=str)[:5]
        only_sample = sorted(sample_ids - test_ids, key=str)[:5]
        raise KitError(
            f"The ids of {test_file} and {sample_file} differ: {len(test_ids - sample_ids)} only "
            f"in test (first: {only_test}), {len(sample_ids - test_ids)} only in the sample "
            f"(first: {only_sample}). Use the files of one competition download."
        )


def load_competition(params: Params, root: Path | None = None) -> Competition:
    """Find, read and check the competition named in params."""
    comp = params.competition
    root = root or find_project_root()
    folder = locate_data(comp, root)
    need = [comp.id_column, *comp.text_columns, comp.label_column]
    if params.validation.group_column:
        need.append(params.validation.group_column)
    ids = comp.id_column
    train = read_table(folder / comp.train_file, columns=need, max_rows=comp.max_rows,
                       id_column=ids)
    test = read_table(folder / comp.test_file, columns=[ids, *comp.text_columns], id_column=ids)
    sample = read_table(folder / comp.sample_submission_file, id_column=ids)
    train_name, test_name = str(folder / comp.train_file), str(folder / comp.test_file)
    sample_name = str(folder / comp.sample_submission_file)
    if comp.id_column not in train or train[comp.id_column].isna().all():
        # Many competitions ship train.csv without ids; row numbers serve for the split.
        log.warning(f"{train_name} has no {comp.id_column!r} column: rows are numbered from 0.")
        train[comp.id_column] = np.arange(len(train))
    for df, name in ((train, train_name), (test, test_name)):
        _check_ids(df, comp.id_column, name)
    _check_ids(sample, comp.id_column, sample_name)
    check_test_matches_sample(test, sample, comp.id_column, test_name, sample_name)
    y, labels = encode_labels(train, comp, train_name)
    answer = None
    if comp.answer_key_file and (folder / comp.answer_key_file).exists():
        answer = read_table(folder / comp.answer_key_file, id_column=ids)
    return Competition(
        slug=comp.slug,
        folder=folder,
        task=comp.task,
        labels=labels,
        train=train.reset_index(drop=True),
        test=test.reset_index(drop=True),
        sample_submission=sample,
        train_texts=render_texts(train, comp, train_name),
        test_texts=render_texts(test, comp, test_name),
        y=y,
        id_column=comp.id_column,
        label_column=comp.label_column,
        answer_key=answer,
    )
