"""A run's decision rule on disk: its file, the model it decides for, and its loader.

03_thresholds writes the rule; 04_submit, 05_infer and kit/serve read it through here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kit.config.params import Params
from kit.core.rundir import RunDir
from kit.errors import KitError
from kit.evaluation.thresholds import DecisionRule

__all__ = ["RULE_FILE", "chosen_model", "load_rule", "rule_labels"]

RULE_FILE = "decision_rule.json"


def chosen_model(run: RunDir) -> str:
    """`submit.model`, or the model with the best validation metric."""
    wanted = run.params.submit.model
    if wanted != "best":
        choices = run.params.model_choices()
        if wanted not in choices:
            raise KitError(f"`submit.model` is {wanted!r}, not one of {choices}.")
        return wanted
    best = run.state().best
    if best is None:
        raise KitError(f"No trained model recorded in {run.path} (run_state.json); run 02_train "
                       "first.")
    return best.model


def load_rule(run: RunDir, task: str, labels: list[str]) -> DecisionRule:
    """The rule 03_thresholds saved; the untuned default when thresholds are disabled."""
    path = run.path / RULE_FILE
    if path.exists():
        return DecisionRule.from_json(path)
    if run.params.thresholds.enabled:
        raise KitError(f"No {RULE_FILE} in {run.path}: run 03_thresholds before 04_submit.")
    return DecisionRule.default(task, labels)


def rule_labels(folder: Path, params: Params) -> list[str]:
    """Class names: the pipeline only knows class ids; the rule (or params) names them."""
    rule_file = folder / RULE_FILE
    labels: Any = (DecisionRule.from_json(rule_file).labels if rule_file.exists()
                   else params.competition.labels)
    if not labels:
        raise KitError(
            f"{folder}: no {RULE_FILE} and no `competition.labels`, so the classes have no "
            "names. Run 03_thresholds for this run."
        )
    return list(labels)
