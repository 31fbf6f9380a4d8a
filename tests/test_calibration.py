"""Temperature scaling: fixes over-confidence, leaves calibrated models alone, keeps the argmax."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, softmax

from kit.errors import KitError
from kit.evaluation.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
    reliability_curve,
)
from kit.evaluation.plots import plot_reliability


def _multiclass(n: int, sharpen: float, seed: int = 0):
    """Labels drawn from softmax(z); the model reports softmax(sharpen * z)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, size=(n, 5))
    true_p = softmax(z, axis=1)
    y = np.array([rng.choice(5, p=row) for row in true_p])
    return y, softmax(sharpen * z, axis=1)


def test_overconfident_multiclass_gets_t_above_one_and_lower_ece():
    y, probs = _multiclass(4000, sharpen=3.0)
    t = fit_temperature(probs, y, "multiclass")
    assert t == pytest.approx(3.0, rel=0.15)
    calibrated = apply_temperature(probs, t, "multiclass")
    before = expected_calibration_error(y, probs, "multiclass")
    after = expected_calibration_error(y, calibrated, "multiclass")
    assert before > 0.1 and after < before / 3
    np.testing.assert_array_equal(calibrated.argmax(axis=1), probs.argmax(axis=1))
    np.testing.assert_allclose(calibrated.sum(axis=1), 1.0)


def test_calibrated_model_keeps_t_near_one():
    y, probs = _multiclass(4000, sharpen=1.0, seed=1)
    assert fit_temperature(probs, y, "multiclass") == pytest.approx(1.0, abs=0.1)


def test_underconfident_model_gets_t_below_one():
    y, probs = _multiclass(4000, sharpen=0.5, seed=2)
    assert fit_temperature(probs, y, "multiclass") < 0.7


def test_binary_and_multilabel_overconfidence():
    rng = np.random.default_rng(3)
    z = rng.normal(0, 2, size=(5000, 3))
    y = (rng.uniform(size=z.shape) < expit(z)).astype(int)
    overconfident = expit(2.5 * z)
    t = fit_temperature(overconfident, y, "multilabel")
    assert t == pytest.approx(2.5, rel=0.15)
    after = apply_temperature(overconfident, t, "multilabel")
    assert expected_calibration_error(y, after, "multilabel") < expected_calibration_error(
        y, overconfident, "multilabel"
    )
    np.testing.assert_array_equal(after > 0.5, overconfident > 0.5)

    binary = np.c_[1 - overconfident[:, 0], overconfident[:, 0]]
    t_bin = fit_temperature(binary, y[:, 0], "binary")
    assert t_bin > 1.8
    np.testing.assert_array_equal(
        apply_temperature(binary, t_bin, "binary").argmax(axis=1), binary.argmax(axis=1)
    )


def test_logits_and_probabilities_give_the_same_temperature():
    rng = np.random.default_rng(4)
    logits = 3 * rng.normal(size=(2000, 4))
    y = np.array([rng.choice(4, p=row) for row in softmax(logits / 3, axis=1)])
    from_logits = fit_temperature(logits, y, "multiclass", from_logits=True)
    from_probs = fit_temperature(softmax(logits, axis=1), y, "multiclass")
    assert from_logits == pytest.approx(from_probs, rel=1e-3)
    assert from_logits == pytest.approx(3.0, rel=0.15)


def test_saturated_probabilities_stay_finite():
    probs = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    y = np.array([0, 1, 1, 1])  # one confident mistake
    t = fit_temperature(probs, y, "binary")
    assert np.isfinite(t) and t > 1
    assert np.isfinite(apply_temperature(probs, t, "binary")).all()


def test_reliability_curve_and_ece_on_a_hand_example():
    # binary: two bins; predicted 0.1 with 1 of 4 positive, predicted 0.9 with 4 of 4 positive
    p = np.array([0.1] * 4 + [0.9] * 4)
    y = np.array([1, 0, 0, 0, 1, 1, 1, 1])
    curve = reliability_curve(y, np.c_[1 - p, p], "binary", n_bins=10)
    assert curve["count"].tolist() == [4, 4]
    np.testing.assert_allclose(curve["observed"], [0.25, 1.0])
    # ECE = (4 * |0.25 - 0.1| + 4 * |1.0 - 0.9|) / 8
    assert expected_calibration_error(y, np.c_[1 - p, p], "binary", n_bins=10) == pytest.approx(
        0.125
    )


def test_bad_inputs_are_explained():
    with pytest.raises(KitError, match="from_logits=True"):
        fit_temperature(np.array([[2.0, -1.0]]), np.array([0]), "multiclass")
    with pytest.raises(KitError, match="temperature must be > 0"):
        apply_temperature(np.array([[0.4, 0.6]]), 0.0, "binary")
    with pytest.raises(KitError, match="Unknown task"):
        fit_temperature(np.array([[0.4, 0.6]]), np.array([0]), "ordinal")


def test_plot_reliability_writes_a_png(tmp_path):
    y, probs = _multiclass(1000, sharpen=3.0)
    after = apply_temperature(probs, fit_temperature(probs, y, "multiclass"), "multiclass")
    fig = plot_reliability(y, probs, after, "multiclass")
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any(text.startswith("before (ECE") for text in legend)
    assert any(text.startswith("after temperature (ECE") for text in legend)
    path = tmp_path / "reliability.png"
    fig.savefig(path)
    assert path.stat().st_size > 10_000
