"""Decision rules: tuned thresholds must win on fresh data, and stay at 0.5 when they cannot."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import expit
from scipy.stats import norm

from kit.errors import KitError
from kit.evaluation.calibration import apply_temperature
from kit.evaluation.metrics import score
from kit.evaluation.plots import (
    plot_confusion_matrix,
    plot_per_class_thresholds,
    plot_threshold_curve,
)
from kit.evaluation.thresholds import (
    DecisionRule,
    apply_class_bias,
    apply_per_class_thresholds,
    choose_binary_threshold,
    choose_per_class_thresholds,
    fit_class_bias,
    sweep_binary,
)

# --- generators: validation and held-out rows come from the same process ----------------------


def miscalibrated(rng: np.random.Generator, n: int):
    """The model's score s is uniform, but P(y=1 | s) crosses 1/2 at s = 0.3, not 0.5."""
    s = rng.uniform(0, 1, n)
    return (rng.uniform(size=n) < expit(8 * (s - 0.3))).astype(int), s


def calibrated(rng: np.random.Generator, n: int):
    """P(y=1 | s) = s: for accuracy the best threshold is exactly 0.5."""
    s = rng.beta(2, 2, n)
    return (rng.uniform(size=n) < s).astype(int), s


def no_signal(rng: np.random.Generator, n: int):
    return rng.integers(0, 2, n), rng.uniform(0, 1, n)


def held_out(metric: str, y: np.ndarray, s: np.ndarray, threshold: float) -> float:
    return score(metric, y, np.c_[1 - s, s], (s > threshold).astype(int), task="binary")


# --- binary -----------------------------------------------------------------------------------


def test_sweep_finds_a_known_optimum():
    p = np.linspace(0.005, 0.995, 100)
    y = (p > 0.3).astype(int)  # separable exactly at 0.30
    sweep = sweep_binary(y, p, "f1")
    best = sweep.loc[sweep["score"].idxmax()]
    assert best["threshold"] == pytest.approx(0.30)
    assert best["score"] == pytest.approx(1.0)
    assert sweep.loc[sweep["threshold"] == 0.5, "score"].item() < 0.9
    assert 0.5 in sweep["threshold"].to_numpy()  # a custom grid still gets the 0.5 reference
    assert 0.5 in sweep_binary(y, p, "f1", grid=[0.2, 0.3])["threshold"].to_numpy()


def test_sweep_matches_sklearn_at_each_threshold():
    rng = np.random.default_rng(0)
    y, s = miscalibrated(rng, 500)
    sweep = sweep_binary(y, s, "mcc", grid=[0.1, 0.37, 0.8])
    for t, value in zip(sweep["threshold"], sweep["score"], strict=True):
        assert value == pytest.approx(held_out("mcc", y, s, t))


def test_miscalibrated_threshold_beats_half_on_fresh_data():
    rng = np.random.default_rng(1)
    y, s = miscalibrated(rng, 2000)
    y_new, s_new = miscalibrated(rng, 20_000)
    choice = choose_binary_threshold(y, s, "accuracy")
    assert not choice.fell_back, choice.reason
    assert 0.2 <= choice.threshold <= 0.4
    assert choice.interval[0] <= choice.threshold <= choice.interval[1]
    assert choice.gain_interval[0] > 0
    assert choice.score_at_threshold > choice.score_at_half
    gain = held_out("accuracy", y_new, s_new, choice.threshold) - held_out(
        "accuracy", y_new, s_new, 0.5
    )
    assert gain > 0.03


def test_robust_rule_does_not_overfit_a_small_calibrated_set():
    robust, raw, fell_back = [], [], 0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        y, s = calibrated(rng, 200)
        y_new, s_new = calibrated(rng, 5000)
        choice = choose_binary_threshold(y, s, "accuracy", seed=seed)
        fell_back += choice.fell_back
        robust.append(held_out("accuracy", y_new, s_new, choice.threshold))
        raw.append(held_out("accuracy", y_new, s_new, choice.best_threshold))
    assert fell_back >= 10
    assert np.mean(robust) >= np.mean(raw)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_no_signal_returns_exactly_half(seed):
    y, s = no_signal(np.random.default_rng(seed), 300)
    choice = choose_binary_threshold(y, s, "accuracy", seed=seed)
    assert choice.fell_back and choice.threshold == 0.5
    assert choice.gain_interval[0] <= 0
    assert "kept 0.5" in choice.reason


def test_real_gain_without_signal_is_kept_for_f1():
    # F1 rewards predicting everything positive when the model knows nothing: a real gain,
    # so the fallback must not hide it.
    y, s = no_signal(np.random.default_rng(5), 300)
    choice = choose_binary_threshold(y, s, "f1")
    assert not choice.fell_back and choice.threshold < 0.1


def test_fold_thresholds_and_sweep_band():
    rng = np.random.default_rng(2)
    y, s = miscalibrated(rng, 1500)
    folds = np.arange(1500) % 5
    choice = choose_binary_threshold(y, s, "accuracy", n_bootstrap=50, folds=folds)
    assert sorted(choice.fold_thresholds) == [0, 1, 2, 3, 4]
    assert all(0.1 < t < 0.5 for t in choice.fold_thresholds.values())
    band = choice.sweep
    assert (band["score_low"] <= band["score"] + 1e-9).all()
    assert (band["score"] <= band["score_high"] + 1e-9).all()


def test_binary_threshold_errors_are_explained():
    y, s = no_signal(np.random.default_rng(0), 50)
    with pytest.raises(KitError, match="does not depend on a threshold"):
        choose_binary_threshold(y, s, "roc_auc")
    with pytest.raises(KitError, match="positive-class column"):
        sweep_binary(y, np.c_[1 - s, s], "f1")
    with pytest.raises(KitError, match="folds"):
        choose_binary_threshold(y, s, "f1", folds=np.zeros(3))


# --- multilabel -------------------------------------------------------------------------------


def multilabel(rng: np.random.Generator, n: int):
    """Calibrated sigmoid outputs for four labels of falling prevalence (rare: best t < 0.5)."""
    z = rng.normal([-1.0, -2.0, -3.0, -4.0], 1.5, size=(n, 4))
    return (rng.uniform(size=z.shape) < expit(z)).astype(int), expit(z)


def test_per_class_thresholds_raise_macro_f1_on_fresh_data():
    rng = np.random.default_rng(0)
    y, probs = multilabel(rng, 2000)
    y_new, probs_new = multilabel(rng, 20_000)
    table = choose_per_class_thresholds(y, probs, labels=["a", "b", "c", "d"])
    assert table["class"].tolist() == ["a", "b", "c", "d"]
    thresholds = table["threshold"].to_numpy()
    assert (thresholds < 0.5).all()  # rare labels are under-predicted at 0.5

    def macro_f1(t):
        pred = apply_per_class_thresholds(probs_new, t, require_label=False)
        return score("f1_macro", y_new, probs_new, pred, task="multilabel")

    assert macro_f1(thresholds) > macro_f1(np.full(4, 0.5)) + 0.05


def test_few_positives_are_shrunk_toward_half():
    rng = np.random.default_rng(2)
    y, probs = multilabel(rng, 300)  # the rarest label has 17 positives
    table = choose_per_class_thresholds(y, probs, prior_positives=20)
    rare = table.iloc[3]
    assert rare["positives"] < 20
    assert abs(rare["threshold"] - 0.5) < abs(rare["best_threshold"] - 0.5)
    weight = rare["positives"] / (rare["positives"] + 20)
    assert rare["threshold"] == pytest.approx(0.5 + weight * (rare["best_threshold"] - 0.5))


def test_require_label_leaves_no_empty_row():
    rng = np.random.default_rng(2)
    _, probs = multilabel(rng, 1000)
    loose = apply_per_class_thresholds(probs, np.full(4, 0.5), require_label=False)
    strict = apply_per_class_thresholds(probs, np.full(4, 0.5), require_label=True)
    empty = loose.sum(axis=1) == 0
    assert empty.mean() > 0.3  # the case is real
    assert (strict.sum(axis=1) >= 1).all()
    np.testing.assert_array_equal(strict[~empty], loose[~empty])
    np.testing.assert_array_equal(strict[empty].argmax(axis=1), probs[empty].argmax(axis=1))


# --- multiclass -------------------------------------------------------------------------------


def imbalanced(rng: np.random.Generator, n: int):
    """Exact posteriors for 3 overlapping classes with priors 85/10/5: argmax starves the rare."""
    prior, means = np.array([0.85, 0.10, 0.05]), np.array([0.0, 1.5, 3.0])
    y = rng.choice(3, size=n, p=prior)
    likelihood = norm.pdf(rng.normal(means[y], 1.0)[:, None], means[None, :], 1.0) * prior
    return y, likelihood / likelihood.sum(axis=1, keepdims=True)


def test_class_bias_raises_macro_f1_on_fresh_data():
    rng = np.random.default_rng(0)
    y, probs = imbalanced(rng, 3000)
    y_new, probs_new = imbalanced(rng, 20_000)
    bias = fit_class_bias(y, probs, "f1_macro")
    assert bias.shape == (3,) and bias.sum() == pytest.approx(0.0)
    assert bias[2] > bias[0]  # the rare class is boosted
    tuned = score(
        "f1_macro", y_new, probs_new, apply_class_bias(probs_new, bias), task="multiclass"
    )
    plain = score("f1_macro", y_new, probs_new, task="multiclass")
    assert tuned > plain + 0.02


# --- the saved rule ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rule",
    [
        DecisionRule(
            "binary",
            "binary_threshold",
            ["neg", "pos"],
            threshold=0.37,
            temperature=1.7,
            metric="f1",
            notes={"reason": "tuned to 0.37", "gain": 0.012},
        ),
        DecisionRule("binary", "argmax", ["neg", "pos"]),
        DecisionRule("multiclass", "bias", ["a", "b", "c"], bias=[0.1, -1 / 3, 2 / 3 - 0.1]),
        DecisionRule("multilabel", "per_class", ["x", "y"], thresholds=[0.1 / 3, 0.45]),
    ],
)
def test_decision_rule_json_round_trip(tmp_path, rule):
    path = tmp_path / "decision_rule.json"
    rule.to_json(path)
    loaded = DecisionRule.from_json(path)
    assert loaded == rule
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(len(rule.labels)), size=50)
    np.testing.assert_array_equal(loaded.apply(probs), rule.apply(probs))


def test_decision_rule_applies_temperature_before_the_threshold():
    rule = DecisionRule(
        "binary", "binary_threshold", ["neg", "pos"], threshold=0.4, temperature=2.0
    )
    rng = np.random.default_rng(0)
    p = rng.uniform(size=200)
    probs = np.c_[1 - p, p]
    expected = (apply_temperature(probs, 2.0, "binary")[:, 1] > 0.4).astype(int)
    np.testing.assert_array_equal(rule.apply(probs), expected)
    assert not np.array_equal(rule.apply(probs), (p > 0.4).astype(int))


def test_default_rules():
    probs = np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    np.testing.assert_array_equal(
        DecisionRule.default("multiclass", ["a", "b", "c"]).apply(probs), [2, 0]
    )
    low = np.array([[0.2, 0.3, 0.1]])
    np.testing.assert_array_equal(
        DecisionRule.default("multilabel", ["a", "b", "c"]).apply(low), [[0, 1, 0]]
    )


def test_decision_rule_refuses_inconsistent_or_unknown_content(tmp_path):
    with pytest.raises(KitError, match="does not fit a multiclass task"):
        DecisionRule("multiclass", "binary_threshold", ["a", "b"], threshold=0.5)
    with pytest.raises(KitError, match="needs `thresholds`"):
        DecisionRule("multilabel", "per_class", ["a", "b"])
    with pytest.raises(KitError, match="3 bias for 2 labels"):
        DecisionRule("multiclass", "bias", ["a", "b"], bias=[0, 0, 0])
    path = tmp_path / "rule.json"
    path.write_text(
        json.dumps({"task": "binary", "kind": "argmax", "labels": ["n", "p"], "tresh": 1})
    )
    with pytest.raises(KitError, match="unknown keys \\['tresh'\\]"):
        DecisionRule.from_json(path)
    with pytest.raises(KitError, match="run 03_thresholds"):
        DecisionRule.from_json(tmp_path / "missing.json")
    with pytest.raises(KitError, match="expects 2 columns"):
        DecisionRule("binary", "argmax", ["n", "p"]).apply(np.ones((3, 3)) / 3)


# --- figures ----------------------------------------------------------------------------------


def _saved(fig, path) -> int:
    fig.savefig(path)
    return path.stat().st_size


def test_plot_threshold_curve_writes_a_png(tmp_path):
    rng = np.random.default_rng(3)
    y, s = miscalibrated(rng, 1000)
    choice = choose_binary_threshold(y, s, "f1", n_bootstrap=50, folds=np.arange(1000) % 5)
    fig = plot_threshold_curve(choice.sweep, choice, "f1")
    ax = fig.axes[0]
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()
    assert any("chosen" in t.get_text() for t in ax.get_legend().get_texts())
    assert _saved(fig, tmp_path / "threshold.png") > 10_000
    # a bare sweep (no choice, no band) draws too
    assert _saved(plot_threshold_curve(sweep_binary(y, s, "f1")), tmp_path / "bare.png") > 5_000


def test_plot_per_class_thresholds_writes_a_png(tmp_path):
    y, probs = multilabel(np.random.default_rng(4), 1000)
    fig = plot_per_class_thresholds(choose_per_class_thresholds(y, probs))
    assert len(fig.axes) == 2
    assert _saved(fig, tmp_path / "per_class.png") > 10_000


def test_plot_confusion_matrix_writes_a_png(tmp_path):
    y, probs = imbalanced(np.random.default_rng(5), 500)
    fig = plot_confusion_matrix(y, probs.argmax(axis=1), ["common", "middle", "rare"])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["common", "middle", "rare"]
    assert _saved(fig, tmp_path / "confusion.png") > 10_000
    counts = plot_confusion_matrix(y, probs.argmax(axis=1), ["a", "b", "c"], normalize=False)
    assert _saved(counts, tmp_path / "counts.png") > 10_000
