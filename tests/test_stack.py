"""Stacking (`ensemble.method: stack`): an honest, cross-validated level-2 model on OOF rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from kit.config.params import load_params
from kit.core.rundir import open_run
from kit.data.competition import load_competition
from kit.ensemble.fit import read_ensemble
from kit.ensemble.stack import apply_stack, fit_stack, stack_features
from kit.errors import KitError
from kit.evaluation.metrics import score
from kit.serve.models import load_model
from kit.steps.decide import fit_decision_rule
from kit.steps.train import train_models


def _members(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two complementary members of a 3-class task: A sees classes 0/1, B sees class 2."""
    y = rng.integers(0, 3, size=n)
    a = rng.normal(0, 1, (n, 3))
    a[np.arange(n), y] += np.where(y < 2, 2.5, 0.0)
    b = rng.normal(0, 1, (n, 3))
    b[np.arange(n), y] += np.where(y == 2, 2.5, 0.3)
    soft = [np.exp(z) / np.exp(z).sum(axis=1, keepdims=True) for z in (a, b)]
    return y, np.stack(soft)


def test_each_rows_stack_prediction_comes_from_a_model_that_never_saw_its_fold():
    rng = np.random.default_rng(0)
    y, stack = _members(300, rng)
    folds = np.arange(300) % 5
    first = fit_stack(stack, stack[:, :20], y, folds, "multiclass")
    y_changed = y.copy()
    y_changed[folds == 0] = (y[folds == 0] + 1) % 3  # relabel fold 0 only
    second = fit_stack(stack, stack[:, :20], y_changed, folds, "multiclass")
    np.testing.assert_allclose(first.oof[folds == 0], second.oof[folds == 0])  # unseen labels
    assert not np.allclose(first.oof[folds == 1], second.oof[folds == 1])  # fold 0 trained them
    assert len(first.models) == 5
    np.testing.assert_allclose(first.oof.sum(axis=1), 1.0)


def test_stack_beats_the_best_member_on_rows_it_never_saw():
    rng = np.random.default_rng(1)
    y, stack = _members(1200, rng)
    y_new, new = _members(1200, rng)  # a fresh draw stands in for the private test
    fitted = fit_stack(stack, new, y, np.arange(1200) % 5, "multiclass", seed=0)
    members = [score("f1_macro", y_new, new[m]) for m in range(2)]
    stacked = score("f1_macro", y_new, fitted.test)
    mean_blend = score("f1_macro", y_new, new.mean(axis=0))
    assert stacked > max(members) + 0.02 and stacked > mean_blend, (stacked, members, mean_blend)
    # The saved coefficients alone reproduce the test probabilities (what serving applies).
    again = apply_stack(json.loads(json.dumps(fitted.models)), stack_features(new, "multiclass"),
                        "multiclass")
    np.testing.assert_allclose(again, fitted.test)


def test_binary_and_multilabel_stacks_give_probabilities_of_the_right_shape():
    rng = np.random.default_rng(2)
    n = 200
    y_bin = rng.integers(0, 2, n)
    p = np.clip(0.6 * y_bin + rng.uniform(0, 0.4, n), 0, 1)
    binary = np.stack([np.column_stack([1 - p, p])] * 2)
    out = fit_stack(binary, binary, y_bin, np.arange(n) % 4, "binary")
    assert out.oof.shape == (n, 2) and np.allclose(out.oof.sum(axis=1), 1)
    assert score("accuracy", y_bin, out.oof, task="binary") > 0.9
    y_ml = (rng.random((n, 3)) < 0.4).astype(int)
    y_ml[:, 2] = 0  # a label no row has: a constant model, no crash
    probs = np.clip(0.5 * y_ml + rng.uniform(0, 0.5, (n, 3)), 0, 1)
    out = fit_stack(np.stack([probs]), np.stack([probs]), y_ml, np.arange(n) % 4, "multilabel")
    assert out.oof.shape == (n, 3) and out.oof[:, 2].max() < 0.01
    assert ((out.oof > 0.5) == y_ml)[:, :2].mean() > 0.9


def test_stack_and_rank_are_refused_together(tmp_path: Path):
    path = tmp_path / "p.yaml"
    path.write_text("ensemble: {enabled: true, method: stack, rank: true}\n")
    with pytest.raises(KitError, match=r"ensemble\.rank: false"):
        load_params(path)


def test_a_stacked_run_is_compared_with_hill_climbing_and_served_as_saved(project: Path):
    run = open_run("params/topics.yaml", "stack", {
        "cv.folds": 3, "ensemble.enabled": True, "ensemble.method": "stack"})
    comp = load_competition(run.params, project)
    table = train_models(run, comp)
    assert {"hill_climb_f1_micro", "stack_f1_micro"} <= set(table.columns)  # 02's table
    info = read_ensemble(run.path)
    saved = run.load_predictions("ensemble")
    if info["method"] == "stack":  # kept: the served ensemble applies the level-2 models
        assert len(info["stack"]["models"]) == 3
        fit_decision_rule(run, comp)  # names the classes for serving
        served = load_model(run.path, run.params, "ensemble", "cpu", labels=comp.labels)
        np.testing.assert_allclose(served.predict(comp.test_texts), saved.test_probs, atol=1e-6)
    assert table.loc["ensemble", "f1_micro"] == pytest.approx(
        max(table.loc["ensemble", "hill_climb_f1_micro"], table.loc["ensemble", "stack_f1_micro"]))
