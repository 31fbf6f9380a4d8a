"""Ordinal grades: expected-grade decoding with fitted cuts, guarded against noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kit.config.params import load_params
from kit.errors import KitError
from kit.evaluation.metrics import score
from kit.evaluation.ordinal import apply_cuts, expected_class, fit_cuts, rounding_cuts
from kit.evaluation.thresholds import DecisionRule
from kit.steps.decide import fit_ordinal_rule


def _graded(n: int, seed: int, spread: float = 1.2) -> tuple[np.ndarray, np.ndarray]:
    """5 grades; each row's probabilities a blurred bump around its grade (how a classifier
    trained on ordered grades spreads its mass onto the neighbours)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, size=n)
    centre = y + rng.normal(0, 0.8, size=n)
    logits = -((np.arange(5)[None, :] - centre[:, None]) ** 2) / (2 * spread**2)
    logits += rng.normal(0, 0.3, size=(n, 5))
    return y, np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def test_fitted_cuts_beat_argmax_and_rounding_on_new_rows():
    # Broad bumps pull the expected grade of the end grades inwards, so plain rounding loses
    # to argmax here; cuts fitted on one draw move outwards and win on another draw.
    y, probs = _graded(2000, 0)
    y_new, new = _graded(2000, 1)
    argmax_new = score("qwk", y_new, new)
    rounded_new = score("qwk", y_new, new, apply_cuts(new, rounding_cuts(5)))
    cuts = fit_cuts(y, probs)
    fitted_new = score("qwk", y_new, new, apply_cuts(new, cuts))
    assert fitted_new > max(argmax_new, rounded_new) + 0.02, (fitted_new, argmax_new, rounded_new)
    assert np.all(np.diff(cuts) > 0) and len(cuts) == 4
    assert cuts[0] > 0.5 and cuts[-1] < 3.5  # the end grades' cuts moved inwards


def test_apply_cuts_counts_the_cuts_reached():
    probs = np.array([[1, 0, 0], [0.5, 0, 0.5], [0, 0, 1], [0.3, 0.7, 0]])
    assert expected_class(probs).tolist() == pytest.approx([0, 1, 2, 0.7])
    assert apply_cuts(probs, np.array([0.5, 1.5])).tolist() == [0, 1, 2, 1]
    assert apply_cuts(probs, np.array([0.8, 1.5])).tolist() == [0, 1, 2, 0]
    with pytest.raises(KitError, match="one fewer cut than classes"):
        apply_cuts(probs, np.array([0.5]))


def test_the_rule_decodes_grades_and_round_trips(tmp_path: Path):
    y, probs = _graded(1500, 2)
    labels = ["1", "2", "3", "4", "5"]
    rule, guard = fit_ordinal_rule(y, probs, labels, "qwk", None, 200, 0)
    assert guard.kept and rule.kind == "ordinal", guard.reason
    assert guard.cross_fitted_score > score("qwk", y, probs) + 0.01
    rule.to_json(tmp_path / "rule.json")
    again = DecisionRule.from_json(tmp_path / "rule.json")
    assert again.cuts == rule.cuts
    np.testing.assert_array_equal(again.apply(probs), apply_cuts(probs, np.array(rule.cuts)))


def test_grades_argmax_already_gets_right_keep_argmax():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 4, size=300)
    probs = np.full((300, 4), 0.1 / 3)
    probs[np.arange(300), y] = 0.9  # argmax is perfect: no decoding can gain
    rule, guard = fit_ordinal_rule(y, probs, ["a", "b", "c", "d"], "qwk", None, 200, 0)
    assert rule.kind == "argmax" and not guard.kept
    assert "not kept" in rule.notes["reason"]


def test_ordinal_params_need_labels_in_order(tmp_path: Path):
    path = tmp_path / "p.yaml"
    path.write_text("competition: {task: multiclass, metric: qwk, ordinal: true}\n")
    with pytest.raises(KitError, match=r"labels` listed lowest first"):
        load_params(path)
    path.write_text("competition: {task: multiclass, metric: qwk, ordinal: true, "
                    "labels: [1, 2, 3]}\n")
    assert load_params(path).competition.ordinal
