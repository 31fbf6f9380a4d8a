"""Submission files: build one in the sample submission's shape, validate it, score it locally.

Validation repeats what Kaggle checks before it spends one of the day's submissions: the same
columns, the same id set in the sample's order, one row per id, no missing values, and labels
inside the competition's label set. Each problem names the first offending rows and the fix.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from kit.data.competition import Competition, split_labels
from kit.errors import KitError
from kit.evaluation import metrics

log = logging.getLogger(__name__)


def build_submission(comp: Competition, pred: np.ndarray, probs: np.ndarray,
                     prediction: str = "label", delimiter: str | None = None) -> pd.DataFrame:
    """A submission in the sample's columns and id order from test predictions in test order.

    `pred` holds class ids (or multi-hot rows); `prediction="probability"` writes the positive
    probability (binary) or one probability column per class when the sample has such columns.
    """
    sample = comp.sample_submission
    idc = comp.id_column
    by_id = pd.DataFrame({idc: comp.test_ids})
    target_cols = [c for c in sample.columns if c != idc]
    if prediction == "probability":
        if set(comp.labels) <= set(map(str, target_cols)) and len(target_cols) == len(comp.labels):
            for k, label in enumerate(comp.labels):
                by_id[label] = probs[:, k]
        elif comp.task == "binary" and len(target_cols) == 1:
            by_id[target_cols[0]] = probs[:, 1]
        else:
            raise KitError(
                f"`submit.prediction: probability` needs a sample submission with one column "
                f"per class {comp.labels}, or a binary task; the sample has {target_cols}."
            )
    else:
        if len(target_cols) != 1:
            raise KitError(
                f"The sample submission has target columns {target_cols}; a label submission "
                "needs exactly one. For one column per class use `submit.prediction: probability`."
            )
        col = target_cols[0]
        if comp.task == "multilabel":
            sep = delimiter if delimiter is not None else " "
            by_id[col] = [sep.join(comp.labels[k] for k in np.flatnonzero(row)) for row in pred]
        else:
            by_id[col] = _cast_like([comp.labels[k] for k in pred], sample[col])
    order = sample[[idc]].merge(by_id, on=idc, how="left")
    return order[list(sample.columns)]


def submitted_labels(value: object, delimiter: str | None, labels: list[str]) -> list[str]:
    """The labels of one multilabel cell of a submission (or answer key), as `build_submission`
    joined them. A label name may hold the delimiter itself (arxiv-multilabel's label_map gives
    "Computer Science", joined by " "): then the longest known name wins at each position."""
    parts = split_labels(value, delimiter)
    sep = delimiter if delimiter is not None else " "
    if not any(sep in label for label in labels):
        return parts
    known, out, i = set(labels), [], 0
    while i < len(parts):
        j = next((j for j in range(len(parts), i + 1, -1) if sep.join(parts[i:j]) in known),
                 i + 1)
        out.append(sep.join(parts[i:j]))
        i = j
    return out


def _cast_like(values: list[str], like: pd.Series) -> pd.Series:
    """Labels in the sample column's dtype (0/1 stay ints, True/False bools, text stays text)."""
    out = pd.Series(values, dtype=object)
    if pd.api.types.is_bool_dtype(like):
        return out.map({"True": True, "False": False, "1": True, "0": False})
    if pd.api.types.is_integer_dtype(like):
        try:
            return out.astype(int)
        except ValueError:
            return out
    if pd.api.types.is_float_dtype(like):
        try:
            return out.astype(float)
        except ValueError:
            return out
    return out


def validate_submission(sub: pd.DataFrame, comp: Competition, prediction: str = "label",
                        delimiter: str | None = None) -> None:
    """Raise KitError naming the first problem found; silent when the file is fine."""
    sample = comp.sample_submission
    idc = comp.id_column
    if list(sub.columns) != list(sample.columns):
        raise KitError(
            f"submission columns {list(sub.columns)} differ from sample_submission.csv's "
            f"{list(sample.columns)}. Write exactly the sample's columns, in its order."
        )
    if len(sub) != len(sample):
        raise KitError(
            f"submission has {len(sub)} rows; sample_submission.csv has {len(sample)}. "
            "Write one row per test id."
        )
    dup = sub[idc].duplicated(keep=False)
    if dup.any():
        raise KitError(
            f"submission repeats ids in {idc!r} (first rows: {sub.index[dup][:5].tolist()}, ids "
            f"{sub.loc[dup, idc].head(5).tolist()}). Keep one row per id."
        )
    wrong = sub[idc].to_numpy() != sample[idc].to_numpy()
    if wrong.any():
        missing = sorted(set(sample[idc]) - set(sub[idc]), key=str)[:5]
        raise KitError(
            f"submission ids differ from sample_submission.csv's at rows "
            f"{np.flatnonzero(wrong)[:5].tolist()}"
            + (f"; ids missing: {missing}" if missing else " (same ids, other order)")
            + ". Build the file by merging onto the sample's id column."
        )
    nan = sub.isna().any(axis=1)
    if nan.any():
        cols = sub.columns[sub.isna().any()].tolist()
        raise KitError(
            f"submission has missing values in {cols} at rows {sub.index[nan][:5].tolist()} "
            f"(ids {sub.loc[nan, idc].head(5).tolist()}). Every test id needs a prediction."
        )
    targets = [c for c in sub.columns if c != idc]
    if prediction == "probability":
        values = sub[targets].to_numpy()
        if not np.issubdtype(values.dtype, np.number) or ((values < 0) | (values > 1)).any():
            raise KitError(f"submission columns {targets} must hold probabilities in [0, 1].")
        return
    col = targets[0]
    allowed = set(comp.labels)
    if comp.task == "multilabel":
        cells = [submitted_labels(v, delimiter, comp.labels) for v in sub[col]]
        bad = [i for i, labels in enumerate(cells) if not set(labels) <= allowed]
    else:
        bad = [i for i, v in enumerate(sub[col]) if _label_text(v) not in allowed]
    if bad:
        raise KitError(
            f"submission column {col!r} has values outside the competition's labels "
            f"{sorted(allowed)} at rows {bad[:5]}: {sub[col].iloc[bad[:5]].tolist()}."
        )
    if sample[col].dtype.kind != sub[col].dtype.kind and comp.task != "multilabel":
        raise KitError(
            f"submission column {col!r} has dtype {sub[col].dtype}, the sample's is "
            f"{sample[col].dtype}. Write labels as the sample does (e.g. 0/1, not '0'/'1')."
        )


def _label_text(value: object) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


class LocalScores(dict):
    """The local scores (a plain dict); empty, it prints why instead of `{}`."""

    def __init__(self, scores: dict | None = None, note: str = "") -> None:
        super().__init__(scores or {})
        self.note = note

    def __repr__(self) -> str:
        return self.note if not self and self.note else super().__repr__()

    __str__ = __repr__


def score_local(sub: pd.DataFrame, comp: Competition, metric: str,
                delimiter: str | None = None) -> dict[str, float]:
    """Score a label submission against the demo answer key: public, private and their gap.

    Without an answer key (every real competition) the result is an empty LocalScores that
    says so when printed.
    """
    key = comp.answer_key
    if key is None:
        return LocalScores(note=(
            f"none: {comp.folder} has no answer key (competition.answer_key_file), so nothing "
            "was scored locally; Kaggle scores the submission."))
    idc, col = comp.id_column, comp.label_column
    merged = key.merge(sub, on=idc, suffixes=("_true", ""))
    true_col = f"{col}_true" if f"{col}_true" in merged else col
    # The key may hold classes the training rows never showed (e.g. `competition.max_rows`
    # cut them off): they are scored as classes the model always misses, not a KeyError.
    if comp.task == "multilabel":
        key_labels = {x for v in merged[true_col]
                      for x in submitted_labels(v, delimiter, comp.labels)}
    else:
        key_labels = {_label_text(v) for v in merged[true_col]}
    unseen = sorted(key_labels - set(comp.labels))
    if unseen and comp.task == "binary":
        raise KitError(
            f"The answer key has labels {unseen} besides the binary task's {comp.labels}; "
            "fix `competition.labels` / `positive_label` or the answer key."
        )
    if unseen:
        log.warning("The answer key has classes the training rows never showed: %s; they "
                    "count as missed in the local scores.", unseen)
    all_labels = [*comp.labels, *unseen]
    index = {label: k for k, label in enumerate(all_labels)}

    def encode(values: pd.Series) -> np.ndarray:
        if comp.task == "multilabel":
            out = np.zeros((len(values), len(all_labels)), dtype=int)
            for i, v in enumerate(values):
                out[i, [index[x] for x in submitted_labels(v, delimiter, comp.labels)]] = 1
            return out
        return np.array([index[_label_text(v)] for v in values])

    target = next(c for c in sub.columns if c != idc)
    scores = {}
    for usage in ("Public", "Private"):
        part = merged[merged["Usage"] == usage]
        if part.empty:
            continue
        y_true, pred = encode(part[true_col]), encode(part[target])
        onehot = (np.eye(len(all_labels))[pred] if comp.task != "multilabel" else pred).astype(
            float)
        scores[f"local_{usage.lower()}"] = metrics.score(metric, y_true, onehot, pred, comp.task)
    if len(scores) == 2:
        scores["public_private_gap"] = scores["local_public"] - scores["local_private"]
    return scores
