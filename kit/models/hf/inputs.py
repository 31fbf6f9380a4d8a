"""The texts and labels of one `train_transformer` call, checked before anything loads.

Each fault is a KitError naming the argument, its shape or value, and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from kit.config.params import TransformerParams
from kit.errors import KitError

if TYPE_CHECKING:
    from kit.models.distill.targets import DistillTargets

__all__ = ["TrainingTexts", "check_training_texts"]


@dataclass
class TrainingTexts:
    """What one call trains on, validates on and predicts, with labels as the Trainer wants them."""

    train_texts: list[str]
    y_train: np.ndarray
    val_texts: list[str]  # empty: no validation
    y_val: np.ndarray | None
    test_texts: list[str]
    num_labels: int
    distill: DistillTargets | None = None  # a student's soft targets of the training rows

    @property
    def has_val(self) -> bool:
        return bool(self.val_texts)


def check_training_texts(
    train_texts: list[str], train_labels: np.ndarray, val_texts: list[str] | None,
    val_labels: np.ndarray | None, test_texts: list[str] | None, *, task: str,
    label_names: list[str], metric: str, cfg: TransformerParams,
    distill: DistillTargets | None = None,
) -> TrainingTexts:
    """The call's texts as lists and labels as int arrays, or a KitError saying what is off."""
    from kit.evaluation.metrics import get_metric

    val_texts = list(val_texts) if val_texts is not None else []
    test_texts = list(test_texts) if test_texts is not None else []
    train_texts = list(train_texts)
    num_labels = len(label_names)
    y_train = _check_labels(train_labels, len(train_texts), num_labels, task, "train_labels")
    y_val = (
        _check_labels(val_labels, len(val_texts), num_labels, task, "val_labels")
        if val_texts
        else None
    )
    if task not in get_metric(metric).tasks:
        raise KitError(
            f"metric {metric!r} is not defined for a {task} task; pick one of the metrics for "
            f"{task} (e.g. f1_macro)."
        )
    if cfg.early_stopping_patience > 0 and not val_texts:  # the arguments, not params: see schema
        raise KitError(
            "transformer.early_stopping_patience > 0 needs validation texts to score; pass "
            "val_texts or set early_stopping_patience: 0."
        )
    if distill is not None:
        distill.check(len(train_texts), num_labels)
    return TrainingTexts(train_texts, y_train, val_texts, y_val, test_texts, num_labels, distill)


def _check_labels(
    labels: Any, n: int, num_labels: int, task: str, name: str
) -> np.ndarray:
    if labels is None:
        raise KitError(f"{name} is missing; pass one label per text.")
    y = np.asarray(labels)
    if task not in ("binary", "multiclass", "multilabel"):
        raise KitError(f"task is {task!r}; use binary, multiclass or multilabel.")
    if task == "binary" and num_labels != 2:
        raise KitError(f"A binary task needs 2 label_names [negative, positive], got {num_labels}.")
    if task == "multilabel":
        if y.ndim != 2 or y.shape != (n, num_labels):
            raise KitError(
                f"{name} has shape {y.shape}; a multilabel task needs a multi-hot array of shape "
                f"({n}, {num_labels}) (one 0/1 column per label name)."
            )
        if not np.isin(y, (0, 1)).all():
            raise KitError(f"{name} holds values other than 0/1; multilabel rows are multi-hot.")
        return y.astype(np.int64)
    if y.shape != (n,):
        raise KitError(f"{name} has shape {y.shape}; expected ({n},): one class id per text.")
    if not np.issubdtype(y.dtype, np.integer):
        raise KitError(f"{name} must hold class ids 0..{num_labels - 1}, not {y.dtype} values.")
    bad = (y < 0) | (y >= num_labels)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise KitError(
            f"{name}[{i}] is {y[i]}; class ids must be in 0..{num_labels - 1} "
            f"(label_names has {num_labels} entries)."
        )
    return y.astype(np.int64)
