"""Decision step: score the chosen model on validation, calibrate it, and fit the decision rule.

The rule (temperature, then a binary threshold, per-class thresholds, or class offsets) is
fitted on the validation predictions only and saved as decision_rule.json for 04_submit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import classification_report

from kit.core.run_state import Decision
from kit.core.rundir import RunDir
from kit.data.competition import Competition
from kit.errors import KitError
from kit.evaluation import metrics
from kit.evaluation.calibration import (
    apply_temperature,
    expected_calibration_error,
    fit_temperature,
)
from kit.evaluation.ordinal import apply_cuts, fit_cuts, rounding_cuts
from kit.evaluation.plots import (
    plot_confusion_matrix,
    plot_per_class_thresholds,
    plot_reliability,
    plot_threshold_curve,
)
from kit.evaluation.rule_guard import RuleGuard, cross_fitted_gain
from kit.evaluation.rule_store import RULE_FILE, chosen_model
from kit.evaluation.thresholds import (
    DecisionRule,
    apply_class_bias,
    apply_per_class_thresholds,
    choose_binary_threshold,
    choose_per_class_thresholds,
    fit_class_bias,
)


@dataclass
class DecisionResult:
    """What 03_thresholds shows; the rule itself is saved as decision_rule.json."""

    model: str
    rule: DecisionRule
    report: pd.DataFrame  # metrics under the default rule and under the chosen rule
    per_class: pd.DataFrame | None = None  # binary/multiclass: precision, recall, F1, support
    confusion_plot: Figure | None = None
    calibration: dict[str, float] | None = None  # temperature, ECE before and after
    reliability_plot: Figure | None = None
    threshold: dict[str, Any] | None = None  # binary: the threshold search
    per_class_thresholds: pd.DataFrame | None = None  # multilabel
    threshold_plot: Figure | None = None
    guard: dict[str, Any] | None = None  # multiclass offsets / multilabel thresholds: kept?

    def describe_rule(self) -> str:
        """One line saying which rule 04_submit applies and why."""
        rule = self.rule
        temp = f" after temperature {rule.temperature:.3g}" if rule.temperature else ""
        if rule.kind == "binary_threshold":
            why = (self.threshold or {}).get("reason", "")
            return f"binary threshold {rule.threshold:.2f}{temp}" + (f": {why}" if why else "")
        why = f" ({(self.guard or {}).get('reason')})" if self.guard else ""
        if rule.kind == "per_class":
            pairs = ", ".join(f"{n} {t:.2f}" for n, t in zip(rule.labels, rule.thresholds or [],
                                                                strict=True))
            return f"per-class thresholds{temp}: {pairs}{why}"
        if rule.kind == "bias":
            pairs = ", ".join(f"{n} {b:+.2f}" for n, b in zip(rule.labels, rule.bias or [],
                                                                strict=True))
            return f"argmax after class offsets{temp}: {pairs}{why}"
        if rule.kind == "ordinal":
            cuts = ", ".join(f"{c:.2f}" for c in rule.cuts or [])
            return f"ordinal: expected grade{temp} cut at {cuts}{why}"
        return f"{rule.kind} (no tuned rule){temp}{why}"


@dataclass
class Validation:
    """One model's validation probabilities with the true labels of the same rows."""

    model: str
    y: np.ndarray
    probs: np.ndarray


def validation_of(run: RunDir, comp: Competition, model: str) -> Validation:
    preds = run.load_predictions(model)
    try:
        rows = comp.train_rows(preds.val_ids)
    except KeyError as err:
        raise KitError(
            f"Validation id {err.args[0]!r} of model {model!r} is not in train.csv: the "
            "predictions come from other data. Retrain in a new run."
        ) from err
    return Validation(model, comp.y[rows], preds.val_probs)


def per_class_report(val: Validation, labels: list[str], pred: np.ndarray) -> pd.DataFrame:
    """Precision, recall, F1 and support per class (scikit-learn's report as a table)."""
    rep = classification_report(val.y, pred, labels=list(range(len(labels))),
                                target_names=labels, output_dict=True, zero_division=0)
    return pd.DataFrame(rep).T.round(4)


def ordinal_decoding(run: RunDir) -> bool:
    """Ordered grades: `competition.ordinal`, or a QWK competition (which counts class ids
    as grades)."""
    comp = run.params.competition
    return comp.ordinal or (comp.metric == "qwk" and comp.task == "multiclass")


def fit_ordinal_rule(y: np.ndarray, probs: np.ndarray, labels: list[str], metric: str,
                     temperature: float | None, bootstrap: int, seed: int,
                     ) -> tuple[DecisionRule, RuleGuard]:
    """Expected-grade decoding with fitted cuts, or plain rounding, or argmax: the first whose
    cross-fitted gain over argmax is clear of 0."""
    if len(labels) < 3:
        raise KitError(f"Ordinal decoding needs 3 or more grades; {labels} has "
                       f"{len(labels)}. Set competition.ordinal: false.")
    argmax = probs.argmax(axis=1)
    fitted = cross_fitted_gain(y, probs, lambda yy, pp: fit_cuts(yy, pp, metric), apply_cuts,
                               argmax, metric, "multiclass", what="fitted ordinal cuts",
                               n_bootstrap=bootstrap, seed=seed)
    if fitted.kept:
        cuts = fit_cuts(y, probs, metric)
        guard = fitted
    else:
        rounded = cross_fitted_gain(y, probs, lambda yy, pp: rounding_cuts(len(labels)),
                                    apply_cuts, argmax, metric, "multiclass",
                                    what="rounded expected grade", n_bootstrap=bootstrap,
                                    seed=seed)
        guard = rounded if rounded.kept else fitted
        cuts = rounding_cuts(len(labels)) if rounded.kept else None
    if cuts is None:
        rule = DecisionRule("multiclass", "argmax", labels, temperature=temperature,
                            notes={"reason": guard.reason})
    else:
        rule = DecisionRule("multiclass", "ordinal", labels, cuts=cuts.tolist(),
                            temperature=temperature, metric=metric,
                            notes={"reason": guard.reason})
    return rule, guard


def fit_decision_rule(run: RunDir, comp: Competition) -> DecisionResult:
    """Everything 03_thresholds shows; saves plots, decision_rule.json and metrics."""
    cfg = run.params.thresholds
    metric = run.params.competition.metric
    task = comp.task
    val = validation_of(run, comp, chosen_model(run))
    out = DecisionResult(model=val.model, rule=DecisionRule.default(task, comp.labels),
                         report=pd.DataFrame())
    default_pred = metrics.default_predictions(val.probs, task)
    out.report = pd.DataFrame(
        {"default rule": metrics.report(val.y, val.probs, default_pred, task, metric)})
    if task != "multilabel":
        out.per_class = per_class_report(val, comp.labels, default_pred)
        fig = plot_confusion_matrix(val.y, default_pred, comp.labels)
        run.save_plot(fig, "confusion_matrix")
        out.confusion_plot = fig

    temperature = None
    probs = val.probs
    if cfg.enabled and cfg.calibrate:
        temperature = fit_temperature(val.probs, val.y, task)
        probs = apply_temperature(val.probs, temperature, task)
        ece = (expected_calibration_error(val.y, val.probs, task),
               expected_calibration_error(val.y, probs, task))
        fig = plot_reliability(val.y, val.probs, probs, task)
        run.save_plot(fig, "reliability")
        out.reliability_plot = fig
        out.calibration = {"temperature": temperature, "ece_before": ece[0],
                              "ece_after": ece[1]}

    rule = DecisionRule.default(task, comp.labels, temperature=temperature)
    if cfg.enabled and task == "binary" and metrics.get_metric(metric).needs == "labels":
        choice = choose_binary_threshold(val.y, probs[:, 1], metric, n_bootstrap=cfg.bootstrap,
                                         seed=run.params.seed)
        rule = DecisionRule(task, "binary_threshold", comp.labels, threshold=choice.threshold,
                            temperature=temperature, metric=metric,
                            notes={"reason": choice.reason})
        fig = plot_threshold_curve(choice.sweep, choice, metric)
        run.save_plot(fig, "threshold_curve")
        out.threshold_plot = fig
        out.threshold = {
            "chosen": choice.threshold, "best_raw": choice.best_threshold,
            "robust": choice.robust_threshold, "interval": list(choice.interval),
            "fell_back_to_half": choice.fell_back, "reason": choice.reason,
        }
    elif cfg.enabled and task == "multilabel":
        table = choose_per_class_thresholds(val.y, probs, "f1", labels=comp.labels)
        half = np.full(len(comp.labels), 0.5)
        guard = cross_fitted_gain(
            val.y, probs,
            lambda y, p: choose_per_class_thresholds(y, p, "f1")["threshold"].to_numpy(),
            lambda p, t: apply_per_class_thresholds(p, t, cfg.require_label),
            apply_per_class_thresholds(probs, half, cfg.require_label), metric, task,
            what="per-class thresholds", n_bootstrap=cfg.bootstrap, seed=run.params.seed)
        out.guard = guard.to_dict()
        thresholds = table["threshold"].to_numpy() if guard.kept else half
        rule = DecisionRule(task, "per_class", comp.labels,
                            thresholds=thresholds.tolist(), temperature=temperature,
                            require_label=cfg.require_label, metric=metric,
                            notes={"reason": guard.reason})
        fig = plot_per_class_thresholds(table)
        run.save_plot(fig, "per_class_thresholds")
        out.per_class_thresholds = table
        out.threshold_plot = fig
    elif cfg.enabled and task == "multiclass" and ordinal_decoding(run):
        rule, guard = fit_ordinal_rule(val.y, probs, comp.labels, metric, temperature,
                                       cfg.bootstrap, run.params.seed)
        out.guard = guard.to_dict()
    elif cfg.enabled and task == "multiclass" and cfg.multiclass_bias:
        guard = cross_fitted_gain(
            val.y, probs, lambda y, p: fit_class_bias(y, p, metric), apply_class_bias,
            probs.argmax(axis=1), metric, task, what="class offsets",
            n_bootstrap=cfg.bootstrap, seed=run.params.seed)
        out.guard = guard.to_dict()
        if guard.kept:
            rule = DecisionRule(task, "bias", comp.labels,
                                bias=fit_class_bias(val.y, probs, metric).tolist(),
                                temperature=temperature, metric=metric,
                                notes={"reason": guard.reason})
        else:
            rule.notes = {"reason": guard.reason}

    rule_pred = rule.apply(val.probs)
    rule_report = metrics.report(val.y, rule.probabilities(val.probs), rule_pred, task, metric)
    out.report["chosen rule (fitted on these rows)"] = pd.Series(rule_report)
    rule.to_json(run.path / RULE_FILE)
    out.rule = rule
    run.update_state(decision=Decision(
        model=val.model, rule=rule.kind, threshold=rule.threshold,
        temperature=temperature, calibration=out.calibration,
        validation_default=float(out.report.loc[metric, "default rule"]),
        validation_rule=float(rule_report[metric]),
        threshold_search=out.threshold, rule_guard=out.guard,
    ))
    run.record_resources("decide")
    return out
