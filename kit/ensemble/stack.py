"""Stacking: a level-2 logistic regression on the members' OOF probabilities, cross-validated.

The level-2 model learns from the members' out-of-fold probabilities, so it must not be scored
on the rows it was fitted on: it is fitted once per fold of the run's own folds (folds.json) on
the other folds' rows and predicts the held-out fold, which makes its OOF score as honest as the
members'. Its test probabilities are the mean of the fold models', as the members' are. The
fitted models are plain coefficients (JSON in ensemble.json), so serving applies the same stack
to the members' outputs without pickles.

Features are the members' log-probabilities (logits per label for multilabel), the scale on
which a logistic regression combines evidence additively; an L2 penalty (`ensemble.stack_c`)
keeps the weights of correlated members in check.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

__all__ = ["Stack", "apply_stack", "fit_stack", "stack_features"]

_EPS = 1e-6


@dataclass
class Stack:
    """The level-2 model's OOF and test probabilities, and its per-fold coefficients."""

    oof: np.ndarray  # (n, K): each row predicted by a level-2 model fitted without its fold
    test: np.ndarray  # (n_test, K): the mean of the fold models
    models: list[dict]  # per fold: {"coef": [[...]], "intercept": [...]} (per label: a list)


def stack_features(stack: np.ndarray, task: str) -> np.ndarray:
    """(members, rows, K) probabilities -> (rows, members * K) log-probabilities or logits."""
    p = np.clip(np.asarray(stack, dtype=float), _EPS, 1 - _EPS)
    feats = np.log(p / (1 - p)) if task == "multilabel" else np.log(p)
    return np.concatenate(list(feats), axis=1)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _fit_one(x: np.ndarray, y: np.ndarray, n_classes: int, c: float, seed: int) -> dict:
    """One logistic regression; a label that is constant in these rows gets a constant model."""
    present = np.unique(y)
    if len(present) == 1:  # nothing to learn: that class with near certainty
        if n_classes == 2:
            return {"coef": [[0.0] * x.shape[1]], "intercept": [9.0 if present[0] == 1 else -9.0]}
        intercept = np.full(n_classes, -9.0)
        intercept[int(present[0])] = 9.0
        return {"coef": np.zeros((n_classes, x.shape[1])).tolist(),
                "intercept": intercept.tolist()}
    model = LogisticRegression(C=c, max_iter=2000, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    coef, intercept = model.coef_, model.intercept_
    if n_classes > 2 and len(model.classes_) < n_classes:  # a class absent from these rows
        full_coef = np.zeros((n_classes, x.shape[1]))
        full_icpt = np.full(n_classes, -9.0)
        full_coef[model.classes_], full_icpt[model.classes_] = coef, intercept
        coef, intercept = full_coef, full_icpt
    return {"coef": np.asarray(coef).tolist(), "intercept": np.asarray(intercept).tolist()}


def _predict_one(model: dict, x: np.ndarray) -> np.ndarray:
    z = x @ np.asarray(model["coef"]).T + np.asarray(model["intercept"])
    if z.shape[1] == 1:  # binary: the positive class's logit
        p1 = _sigmoid(z[:, 0])
        return np.column_stack([1 - p1, p1])
    return _softmax(z)


def apply_stack(models: list[dict], x: np.ndarray, task: str) -> np.ndarray:
    """The mean of the fold models' probabilities for features `x` (see `stack_features`)."""
    out = []
    for model in models:
        if task == "multilabel":
            out.append(np.column_stack([_predict_one(m, x)[:, 1] for m in model["labels"]]))
        else:
            out.append(_predict_one(model, x))
    return np.mean(out, axis=0)


def fit_stack(val_stack: np.ndarray, test_stack: np.ndarray, y: np.ndarray, folds: np.ndarray,
              task: str, c: float = 1.0, seed: int = 0) -> Stack:
    """Cross-validated level-2 logistic regression: fold f's rows predicted by a model fitted on
    the other folds' rows. `folds` holds one fold id (0..k-1) per OOF row."""
    x, x_test = stack_features(val_stack, task), stack_features(test_stack, task)
    y = np.asarray(y)
    n_classes = val_stack.shape[2]
    oof = np.zeros((len(x), n_classes))
    models = []
    for f in np.unique(folds):
        held = folds == f
        if task == "multilabel":
            model = {"labels": [_fit_one(x[~held], y[~held, k], 2, c, seed)
                                for k in range(n_classes)]}
        else:
            model = _fit_one(x[~held], y[~held], n_classes, c, seed)
        oof[held] = apply_stack([model], x[held], task)
        models.append(model)
    return Stack(oof=oof, test=apply_stack(models, x_test, task), models=models)
