"""Competition data: find the files, check them, and turn rows into texts and labels.

Data is found, in order: `competition.data_dir`; `/kaggle/input/<slug>` on Kaggle;
`data/<slug>` under the project root (demo competitions are built there on first use); else
`kaggle competitions download`. Files are read by `kit.data.readers`. Every check that fails
names the file, the column, the first offending rows, and the fix.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from kit.config.params import CompetitionParams, Params
from kit.core.platform import kaggle_input
from kit.core.project import find_project_root
from kit.data.arrow_rows import TextColumn
from kit.data.cache import StreamedTable, load_test_rows, load_train_rows
from kit.data.checks import check_ids, check_test_matches_sample, require_columns
from kit.data.labelmap import code_counts, label_str, map_label, split_labels
from kit.data.labels import encode_labels
from kit.data.readers import ids_as_written, read_table
from kit.data.texts import (
    drop_empty_train_texts,
    empty_texts,
    render_rows,
    render_texts,
    warn_dropped_train_texts,
    warn_empty_test_texts,
)
from kit.errors import KitError

log = logging.getLogger(__name__)
_label_str = label_str  # the name kit.config.schema imports
# Names other modules import from here (their homes are kit.data.labels, .texts, .checks).
__all__ = ["Competition", "check_test_matches_sample", "empty_texts", "encode_labels",
           "find_project_root", "load_competition", "locate_data", "map_label", "render_texts",
           "split_labels", "warn_empty_test_texts"]


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
    # A list for a plain read; for streamed rows, a TextColumn: the texts stay in an Arrow file
    # of the data cache (kit.data.texts.render_rows), read as a sequence of str.
    train_texts: Sequence[str]
    test_texts: Sequence[str]
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

    def train_rows(self, ids: np.ndarray) -> np.ndarray:
        """The positions in train of the training ids `ids` (a model's validation/OOF rows), to
        index `y` with; a KeyError names an id train does not have."""
        return np.array([self._row_of[v] for v in ids.tolist()], dtype=int)

    @cached_property
    def _row_of(self) -> dict:
        """Training id -> its position in train: built once (a 1M-row train is read for every
        model, seed and refit), never stale (nothing assigns `train` after loading)."""
        return {v: i for i, v in enumerate(self.train_ids.tolist())}


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
    require_columns(train, [*comp.text_columns, comp.label_column], train_name)
    if comp.id_column not in train or train[comp.id_column].isna().all():
        # Many competitions ship train.csv without ids; row numbers serve for the split.
        log.warning(f"{train_name} has no {comp.id_column!r} column: rows are numbered from 0.")
        train[comp.id_column] = np.arange(len(train))
    for df, name in ((train, train_name), (test, test_name)):
        check_ids(df, comp.id_column, name)
    if streamed is None:
        train = drop_empty_train_texts(train, comp, train_name)
        warn_empty_test_texts(test, comp, test_name)
    else:
        train, train_texts = _streamed_train_texts(train, streamed, comp, train_name)
        test_texts = _streamed_test_texts(test, streamed_test, comp, test_name)
    check_ids(sample, comp.id_column, sample_name)
    check_test_matches_sample(test, sample, comp.id_column, test_name, sample_name)
    if codes is None and comp.label_column in train:
        codes = dict(code_counts(train[comp.label_column], comp))
    y, labels = encode_labels(train, comp, train_name)
    answer = None
    if comp.answer_key_file and (folder / comp.answer_key_file).exists():
        answer = read_table(folder / comp.answer_key_file, id_column=ids, **fmt)
    if streamed is None:
        train_texts = render_texts(train, comp, train_name)
        test_texts = render_texts(test, comp, test_name)
    return Competition(
        slug=comp.slug,
        folder=folder,
        task=comp.task,
        labels=labels,
        train=train.reset_index(drop=True),
        test=test.reset_index(drop=True),
        sample_submission=sample,
        train_texts=train_texts,
        test_texts=test_texts,
        y=y,
        id_column=comp.id_column,
        label_column=comp.label_column,
        answer_key=answer,
        label_codes=codes,
        data_info=None if streamed is None else {**streamed.info, "cache_hit": streamed.cache_hit,
                                                 "cache_file": streamed.cache_file},
    )


def _streamed_train_texts(train: pd.DataFrame, streamed: StreamedTable, comp: CompetitionParams,
                          file: str) -> tuple[pd.DataFrame, TextColumn]:
    """Streamed rows' texts, rendered into the cache (Arrow), rows without text dropped.

    The same texts in the same order as `render_texts` after `drop_empty_train_texts`.
    """
    texts, empty = render_rows(streamed.rows, comp, file)
    warn_dropped_train_texts(train, empty, comp, file)
    if len(empty) == 0:
        return train, texts
    keep = np.setdiff1d(np.arange(len(train)), empty)
    return train.drop(index=train.index[empty]), TextColumn(texts.rows, "text", keep)


def _streamed_test_texts(test: pd.DataFrame, streamed: StreamedTable | None,
                         comp: CompetitionParams, file: str) -> Sequence[str]:
    """Test texts of streamed rows (every row kept), else rendered from the frame."""
    if streamed is None:
        warn_empty_test_texts(test, comp, file)
        return render_texts(test, comp, file)
    texts, empty = render_rows(streamed.rows, comp, file)
    warn_empty_test_texts(test, comp, file, empty)
    return texts
