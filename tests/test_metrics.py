"""Metrics registry: Kaggle names map to the right scikit-learn computations, errors help people."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from kit.errors import KitError
from kit.evaluation.metrics import (
    METRICS,
    default_predictions,
    get_metric,
    report,
    score,
    score_from_binary_counts,
)


def _multiclass(n: int = 300, k: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 2.0 * np.eye(k)[y]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, probs


def _binary(n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.5 + 0.3 * (y - 0.5) + rng.normal(0, 0.2, n), 0.01, 0.99)
    return y, np.c_[1 - p, p]


def _multilabel(n: int = 300, k: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=(n, k)) < [0.5, 0.3, 0.1]).astype(int)
    probs = np.clip(0.3 * y + rng.uniform(0, 0.7, (n, k)), 0.01, 0.99)
    return y, probs


def test_registry_names_and_directions():
    assert set(METRICS) == {
        "accuracy", "f1", "f1_micro", "f1_macro", "f1_weighted", "mcc", "log_loss", "roc_auc", "qwk"
    }  # fmt: skip
    assert get_metric("log_loss").greater_is_better is False
    assert get_metric("log_loss").needs == "probs"
    assert get_metric("roc_auc").needs == "probs"
    assert get_metric("qwk").needs == "labels" and get_metric("qwk").greater_is_better


def test_typo_names_the_close_valid_metric():
    with pytest.raises(KitError, match="f1_macro"):
        get_metric("f1_marco")
    with pytest.raises(KitError, match="Unknown metric 'auc_roc'"):
        get_metric("auc_roc")


def test_binary_scores_match_sklearn_with_positive_class():
    y, probs = _binary()
    pred = probs.argmax(axis=1)
    assert score("f1", y, probs, task="binary") == pytest.approx(skm.f1_score(y, pred))
    assert score("mcc", y, probs, task="binary") == pytest.approx(skm.matthews_corrcoef(y, pred))
    assert score("roc_auc", y, probs, task="binary") == pytest.approx(
        skm.roc_auc_score(y, probs[:, 1])
    )
    # a decided `pred` is used instead of the argmax default
    all_positive = np.ones_like(y)
    assert score("f1", y, probs, all_positive, task="binary") == pytest.approx(
        2 * y.mean() / (1 + y.mean())
    )


def test_multiclass_scores_match_sklearn():
    y, probs = _multiclass()
    pred = probs.argmax(axis=1)
    assert score("f1_macro", y, probs, task="multiclass") == pytest.approx(
        skm.f1_score(y, pred, average="macro")
    )
    assert score("qwk", y, probs, task="multiclass") == pytest.approx(
        skm.cohen_kappa_score(y, pred, weights="quadratic")
    )
    assert score("roc_auc", y, probs, task="multiclass") == pytest.approx(
        skm.roc_auc_score(y, probs, multi_class="ovr", average="macro")
    )
    assert score("log_loss", y, probs, task="multiclass") == pytest.approx(skm.log_loss(y, probs))



def test_f1_and_accuracy_on_class_ids_equal_scikit_learns():
    """F1 and accuracy of class ids are computed from counts (scikit-learn's validation cost
    8 ms a call in the decision rule's searches); on every kind of input they equal
    scikit-learn's, to the last bit: classes missing from either side, one row, one class,
    binary without a positive, ids with gaps."""
    from kit.evaluation import metrics

    rng = np.random.default_rng(0)
    cases = [(np.array([0, 0, 0]), np.array([0, 0, 0])), (np.array([1]), np.array([0])),
             (np.array([0, 0, 1]), np.array([0, 0, 0])), (np.array([0, 5, 5]), np.array([2, 5, 0]))]
    for _ in range(300):
        n, k = int(rng.integers(1, 60)), int(rng.integers(2, 7))
        y = rng.integers(0, k, n)
        pred = np.where(rng.random(n) < 0.6, y, rng.integers(0, k, n))
        cases.append((y, pred))
    for y, pred in cases:
        averages = ["micro", "macro", "weighted"] + (["binary"] if max(y.max(), pred.max()) <= 1
                                                     else [])
        for average in averages:
            assert metrics._f1(average)(y, pred, "multiclass") == skm.f1_score(
                y, pred, average=average, zero_division=0), (average, y, pred)
        assert metrics._accuracy(y, pred, "multiclass") == skm.accuracy_score(y, pred)
    y3 = np.array([0, 1, 2])  # not binary: left to scikit-learn, which refuses it
    with pytest.raises(ValueError):
        metrics._f1("binary")(y3, y3, "binary")

def test_log_loss_of_float32_softmax_is_quiet_and_unnormalised_scores_still_warn():
    """Saved probabilities are a float32 softmax cast to float64: rounding alone must not make
    scikit-learn warn in every notebook, while scores that are no probabilities still do."""
    y, probs = _multiclass()
    logits = np.log(probs).astype(np.float32) * np.float32(1.7)
    soft = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    as_saved = soft.astype(np.float32).astype(np.float64)
    assert np.abs(as_saved.sum(axis=1) - 1).max() > np.sqrt(np.finfo(np.float64).eps)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = score("log_loss", y, as_saved, task="multiclass")
    assert got == pytest.approx(skm.log_loss(y, as_saved / as_saved.sum(axis=1, keepdims=True)))
    with pytest.warns(UserWarning, match="do not sum to one"):
        score("log_loss", y, probs * 0.9, task="multiclass")


def test_multilabel_uses_subset_accuracy_and_half_threshold():
    y, probs = _multilabel()
    pred = default_predictions(probs, "multilabel")
    np.testing.assert_array_equal(pred, (probs > 0.5).astype(int))
    assert score("accuracy", y, probs, task="multilabel") == pytest.approx(
        np.mean((pred == y).all(axis=1))
    )
    assert score("f1_micro", y, probs, task="multilabel") == pytest.approx(
        skm.f1_score(y, pred, average="micro")
    )
    per_column = [skm.log_loss(y[:, k], probs[:, k]) for k in range(y.shape[1])]
    assert score("log_loss", y, probs, task="multilabel") == pytest.approx(np.mean(per_column))


@pytest.mark.parametrize(
    ("name", "task", "message"),
    [("mcc", "multilabel", "not defined for a multilabel"), ("f1", "multiclass", "f1_macro")],
)
def test_metric_outside_its_tasks_is_refused(name, task, message):
    y, probs = _multilabel() if task == "multilabel" else _multiclass()
    with pytest.raises(KitError, match=message):
        score(name, y, probs, task=task)


def test_shape_mismatch_is_explained():
    y, probs = _multiclass()
    with pytest.raises(KitError, match=r"y_true has shape \(299,\)"):
        score("accuracy", y[:-1], probs, task="multiclass")
    with pytest.raises(KitError, match="2 columns"):
        score("accuracy", y, probs, task="binary")


def test_report_leads_with_competition_metric_and_skips_uncomputable():
    y, probs = _multiclass()
    out = report(y, probs, probs.argmax(axis=1), "multiclass", "qwk")
    assert next(iter(out)) == "qwk"
    assert {"accuracy", "f1_micro", "f1_macro", "f1_weighted", "log_loss", "roc_auc"} <= set(out)
    assert all(isinstance(v, float) for v in out.values())

    # a class absent from y_true: roc_auc (ovr) is undefined and left out, not NaN
    y_missing = np.where(y == 3, 0, y)
    out = report(y_missing, probs, None, "multiclass", "f1_macro")
    assert "roc_auc" not in out and "log_loss" in out


@pytest.mark.parametrize(
    "name", ["accuracy", "f1", "f1_micro", "f1_macro", "f1_weighted", "mcc", "qwk"]
)
def test_binary_count_formulas_match_sklearn(name):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500)
    for flip in (0.1, 0.3, 0.6):  # several decisions, each a noisy copy of y
        pred = np.where(rng.uniform(size=500) < flip, 1 - y, y)
        tp, fp = np.sum((pred == 1) & (y == 1)), np.sum((pred == 1) & (y == 0))
        fn, tn = np.sum((pred == 0) & (y == 1)), np.sum((pred == 0) & (y == 0))
        expected = score(name, y, np.c_[1 - pred, pred], pred, task="binary")
        assert score_from_binary_counts(name, tp, fp, fn, tn) == pytest.approx(expected)


def test_count_formulas_refuse_probability_metrics():
    with pytest.raises(KitError, match="does not depend on a threshold"):
        score_from_binary_counts("roc_auc", 1, 1, 1, 1)


def test_every_metric_name_the_schema_accepts_is_computed_and_no_other():
    from kit.config.metric_names import METRIC_NAMES
    from kit.evaluation import metrics as computed

    assert set(computed._FUNCTIONS) == set(METRIC_NAMES) == set(METRICS)
    assert all(METRICS[n].tasks == METRIC_NAMES[n].tasks for n in METRIC_NAMES)
