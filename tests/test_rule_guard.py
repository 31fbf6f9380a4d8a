"""Guarded multiclass and multilabel rules: kept only when they help on rows they did not see."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kit.core.rundir import open_run
from kit.data.competition import load_competition
from kit.evaluation.metrics import score
from kit.evaluation.rule_guard import cross_fitted_gain
from kit.evaluation.thresholds import (
    apply_class_bias,
    apply_per_class_thresholds,
    choose_per_class_thresholds,
    fit_class_bias,
)
from kit.steps.decide import fit_decision_rule
from kit.steps.train import train_models


def _offsets_guard(y: np.ndarray, probs: np.ndarray, seed: int = 0):
    return cross_fitted_gain(
        y, probs, lambda yy, pp: fit_class_bias(yy, pp, "f1_macro"), apply_class_bias,
        probs.argmax(axis=1), "f1_macro", "multiclass", what="class offsets", seed=seed)


def test_offsets_fitted_on_noise_win_in_sample_but_are_not_kept():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=400)
    probs = rng.dirichlet(np.ones(4), size=400)  # no information about y at all
    bias = fit_class_bias(y, probs, "f1_macro")
    in_sample = score("f1_macro", y, probs, apply_class_bias(probs, bias))
    assert in_sample > score("f1_macro", y, probs) + 0.01  # what an unguarded rule would keep
    guard = _offsets_guard(y, probs)
    assert not guard.kept
    assert guard.gain_interval[0] <= 0 < guard.gain_interval[1] or guard.gain_interval[1] <= 0
    assert "class offsets not kept" in guard.reason and "includes 0" in guard.reason


def test_offsets_that_fix_a_real_shift_are_kept():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, size=900)
    logits = rng.normal(0, 1.0, size=(900, 3))
    logits[np.arange(900), y] += 1.5  # informative scores ...
    logits[:, 0] -= 2.0  # ... with class 0 pushed down by a constant: offsets undo it
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    guard = _offsets_guard(y, probs)
    assert guard.kept, guard.reason
    assert guard.gain_interval[0] > 0
    assert guard.cross_fitted_score > guard.default_score + 0.05


def test_per_class_thresholds_are_kept_for_a_shift_and_dropped_without_one():
    rng = np.random.default_rng(2)
    n, k = 600, 3
    y = (rng.random((n, k)) < 0.3).astype(int)
    half = np.full(k, 0.5)

    def guard(probs: np.ndarray):
        return cross_fitted_gain(
            y, probs, lambda yy, pp: choose_per_class_thresholds(yy, pp, "f1")["threshold"]
            .to_numpy(), apply_per_class_thresholds, apply_per_class_thresholds(probs, half),
            "f1_micro", "multilabel", what="per-class thresholds")

    shifted = np.clip(0.25 * y + rng.uniform(0, 0.3, size=(n, k)), 0, 1)  # positives ~0.25-0.55
    assert guard(shifted).kept
    # Scores that already separate at 0.5 (one label in ten flipped): moving a threshold only
    # trades flipped rows, so the in-sample pick is noise and the guard keeps 0.5.
    separated = np.where(y == 1, rng.uniform(0.55, 1, size=(n, k)), rng.uniform(0, 0.45, (n, k)))
    flip = rng.random((n, k)) < 0.1
    y[:] = np.where(flip, 1 - y, y)
    assert not guard(separated).kept


def test_the_decision_step_falls_back_to_argmax_and_says_why(project: Path):
    # 3-fold TF-IDF on a tiny topics competition, then class offsets asked for. The fixture's
    # OOF predictions are nearly perfect, so offsets have nothing real to fix: the guard drops
    # them, 03 prints why, and the rule and metrics.json record the evidence.
    run = open_run("params/topics.yaml", "guard",
                   {"cv.folds": 3, "thresholds.multiclass_bias": True})
    comp = load_competition(run.params, project)
    train_models(run, comp)
    result = fit_decision_rule(run, comp)
    assert result.guard is not None and result.rule.kind in ("argmax", "bias")
    decision = run.read_metrics()["decision"]
    assert decision["rule_guard"]["kept"] == (result.rule.kind == "bias")
    line = result.describe_rule()
    assert result.guard["reason"] in line
    if result.rule.kind == "argmax":
        assert line.startswith("argmax (no tuned rule)") and "not kept" in line
        assert result.rule.notes["reason"] == result.guard["reason"]
