"""Competition data: find the files, check them, and turn rows into texts and labels.

Data is found, in order: `competition.data_dir`; `/kaggle/input/<slug>` on Kaggle;
`data/<slug>` under the project root (demo competitions are built there on first use); else
`kaggle competitions download`. Files are read by `kit.data.readers`. Every check that fails
names the file, the column, the first offending rows, and the fix.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kit.config.params import CompetitionParams, Params
from kit.core.platform import kaggle_input
from kit.core.project import find_project_root
from kit.data.cache import load_test_rows, load_train_rows
from kit.data.labelmap import code_counts, label_str, map_label, split_labels
from kit.data.readers import DELIMITERS, ids_as_written, read_table
from kit.errors import KitError

log = logging.getLogger(__name__)
_label_str = label_str  # the name kit.config.schema imports


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
    label_codes: dict[str, int] | None = None  # rows per raw label code (the whole file)
    data_info: dict | None = None  # the streamed pass: records, bad lines, cache (else None)

    @property
    def train_ids(self) -> np.ndarray:
        return self.train[self.id_column].to_numpy()

    @property
    def test_ids(self) -> np.ndarray:
        return self.test[self.id_column].to_numpy()


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
    kaggle = kaggle_input()
    for folder in (kaggle / comp.slug, kaggle / "competitions" / comp.slug):
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


def render_texts(df: pd.DataFrame, comp: CompetitionParams, file: str,
                 template: str | None = None) -> list[str]:
    """Join the text columns through the template; a missing cell renders as empty text."""
    template = template or comp.text_template
    _require_columns(df, comp.text_columns, file)
    if template is None:
        template = "\n\n".join("{" + c + "}" for c in comp.text_columns)
    # Column by column as Python lists, no frame copies: a million long texts stay one copy.
    names = comp.text_columns
    columns = [[_cell_text(v) for v in df[c].tolist()] for c in names]
    try:
        return [template.format(**dict(zip(names, row, strict=True)))
                for row in zip(*columns, strict=True)]
    except KeyError as err:
        raise KitError(
            f"`competition.text_template` uses {{{err.args[0]}}}, which is not one of "
            f"`competition.text_columns` {comp.text_columns}. Add the column or fix the template."
        ) from err


def empty_texts(df: pd.DataFrame, comp: CompetitionParams, file: str) -> np.ndarray:
    """Row positions whose text columns are all missing or blank."""
    _require_columns(df, comp.text_columns, file)
    blank = np.ones(len(df), dtype=bool)
    for c in comp.text_columns:
        blank &= np.fromiter((not _cell_text(v).strip() for v in df[c].tolist()), dtype=bool,
                             count=len(df))
    return np.flatnonzero(blank)


def _cell_text(value: object) -> str:
    """A text cell as text: missing (None, NaN, NA) is empty; numbers as pandas writes them."""
    if isinstance(value, str):
        return value
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return ""
    return str(value)


def drop_empty_train_texts(train: pd.DataFrame, comp: CompetitionParams,
                           file: str) -> pd.DataFrame:
    """Drop training rows without text (nothing to learn from), saying how many and which."""
    empty = empty_texts(train, comp, file)
    if len(empty) == 0:
        return train
    where = _first_ids(train, empty.tolist(), comp.id_column)
    if len(empty) == len(train):
        raise KitError(
            f"{file}: every row has empty text in {comp.text_columns} ({_n_rows(len(train))}, "
            f"{where}). Set `competition.text_columns` to the column(s) that hold the text; "
            f"the file has {list(train.columns)[:20]}."
        )
    log.warning(
        f"{file}: dropped {_n_rows(len(empty))} of {len(train)} with empty or missing text in "
        f"{comp.text_columns} ({where}): there is nothing to learn from them. (Empty texts in "
        "the test file are kept and predicted.)"
    )
    return train.drop(index=train.index[empty])


def warn_empty_test_texts(test: pd.DataFrame, comp: CompetitionParams, file: str) -> None:
    """Test rows without text stay: the submission needs every id, so they get predicted."""
    empty = empty_texts(test, comp, file)
    if len(empty):
        log.warning(
            f"{file}: {_n_rows(len(empty))} of {len(test)} with empty or missing text in "
            f"{comp.text_columns} ({_first_ids(test, empty.tolist(), comp.id_column)}): kept, "
            "and predicted from empty text, since the submission needs every id."
        )


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
                f"map (first raw values: {raws}, {_first_ids(df, empty, comp.id_column)}). Add "
                "exact keys or prefixes for them."
            )
    if comp.labels:
        labels = [_label_str(x) for x in comp.labels]
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
            f"{file}: {_n_rows(len(outside))} with labels outside `competition.labels` "
            f"{labels}: rows per label {_by_count(found)} "
            f"({_first_ids(df, outside, comp.id_column)}). {fix}"
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
    where = f"{_n_rows(len(rows))}, {_first_ids(df, rows, comp.id_column)}"
    two = " or ".join(repr(x) for x in sorted(main))
    pairs = [f"{x!r}: {x!r}" for x in sorted(main)] + [f"{x!r}: <{two}>" for x in list(extra)[:3]]
    example = "{" + ", ".join(pairs) + "}"
    fix = (f"fix or drop those rows, or map every label onto the two classes with "
           f"`competition.label_map`, e.g. {example}.")
    # A label on a handful of rows is a typo or a stray line, not a class one could learn.
    if len(rows) <= 0.05 * len(per_row) or max(extra.values()) <= 2:
        raise KitError(
            f"{file}: task is binary, but besides its two classes {sorted(main)} column "
            f"{comp.label_column!r} has stray labels: rows per label {_by_count(extra)} "
            f"({where}). To train on the two classes, {fix}"
        )
    raise KitError(
        f"{file}: task is binary, but column {comp.label_column!r} has {len(counts)} labels: "
        f"rows per label {_by_count(counts)}. If the task has {len(counts)} classes, set "
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
            f"(rows per label: {_by_count(counts)}). A classifier needs rows of at least two "
            f"classes. {fix}"
        )
    only = next(iter(counts), None)
    raise KitError(
        f"{file}: every row has the label {only!r} ({_n_rows(len(per_row))}): the file holds only "
        f"one class, and a classifier needs at least two. {fix}"
    )


def _n_rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _by_count(counts: dict[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _first_ids(df: pd.DataFrame, rows: list[int], id_column: str, n: int = 5) -> str:
    """'first ids: [...]' of the rows at these positions (row numbers when there are no ids)."""
    if id_column in df:
        return f"first ids: {df[id_column].iloc[rows[:n]].tolist()}"
    return f"first rows (0 = the first after the header): {list(rows[:n])}"


def _require_columns(df: pd.DataFrame, columns: list[str], file: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if not missing:
        return
    for sep in DELIMITERS:  # a header read with the wrong delimiter is one long column name
        if any(set(missing) <= set(str(name).split(sep)) for name in df.columns):
            raise KitError(
                f"{file}: missing column(s) {missing}; its header {list(df.columns)[:5]} looks "
                f"separated by {sep!r}. Set `competition.csv_delimiter: {sep!r}` in the params "
                "file (or remove it to have the delimiter detected)."
            )
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
    fmt = {"delimiter": comp.csv_delimiter, "encoding": comp.encoding}
    ids = comp.id_column
    streamed = load_train_rows(folder / comp.train_file, need, params, root)
    if streamed is None:
        train = read_table(folder / comp.train_file, columns=need, max_rows=comp.max_rows,
                           id_column=ids, **fmt)
        codes = None
    else:
        train = streamed.frame
        if ids in train:
            train[ids] = ids_as_written(train[ids])
        codes = streamed.info.get("label_codes")
    test_columns = [ids, *comp.text_columns]
    streamed_test = load_test_rows(folder / comp.test_file, test_columns, params, root,
                                   streamed is not None)
    if streamed_test is None:
        test = read_table(folder / comp.test_file, columns=test_columns, id_column=ids, **fmt)
    else:
        test = streamed_test.frame
        test[ids] = ids_as_written(test[ids])
    sample = read_table(folder / comp.sample_submission_file, id_column=ids, **fmt)
    train_name, test_name = str(folder / comp.train_file), str(folder / comp.test_file)
    sample_name = str(folder / comp.sample_submission_file)
    if train.empty:
        raise KitError(
            f"{train_name} has no rows, only the header {list(train.columns)[:10]}: nothing to "
            "train on. Download the competition's files again, or point `competition.train_file` "
            "(and `competition.data_dir`) at the full training file."
        )
    _require_columns(train, [*comp.text_columns, comp.label_column], train_name)
    if comp.id_column not in train or train[comp.id_column].isna().all():
        # Many competitions ship train.csv without ids; row numbers serve for the split.
        log.warning(f"{train_name} has no {comp.id_column!r} column: rows are numbered from 0.")
        train[comp.id_column] = np.arange(len(train))
    for df, name in ((train, train_name), (test, test_name)):
        _check_ids(df, comp.id_column, name)
    train = drop_empty_train_texts(train, comp, train_name)
    warn_empty_test_texts(test, comp, test_name)
    _check_ids(sample, comp.id_column, sample_name)
    check_test_matches_sample(test, sample, comp.id_column, test_name, sample_name)
    if codes is None and comp.label_column in train:
        codes = dict(code_counts(train[comp.label_column], comp))
    y, labels = encode_labels(train, comp, train_name)
    answer = None
    if comp.answer_key_file and (folder / comp.answer_key_file).exists():
        answer = read_table(folder / comp.answer_key_file, id_column=ids, **fmt)
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
        label_codes=codes,
        data_info=None if streamed is None else {**streamed.info, "cache_hit": streamed.cache_hit,
                                                 "cache_file": streamed.cache_file},
    )
