"""A finished run's chosen model and decision rule, loaded once, predicting labels for new texts.

`Predictor.load(run_folder)` picks the model 04_submit used (`submit.model`, else metrics.json's
`best_model`) through kit.serve.models: the transformer from its export (`load_exported`), the
fitted TF-IDF pipeline, the mean of a k-fold model's fold models, or an ensemble. New texts are
rendered from the run's text columns and template exactly as in training, and the run's
`DecisionRule` turns raw probabilities into labels and scores as it does for the submission.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from kit.config.params import Params, params_from_dict
from kit.core.rundir import RunDir
from kit.data.competition import warn_empty_test_texts
from kit.data.pairs import render_as_read
from kit.data.texts import render_records
from kit.errors import KitError
from kit.evaluation.rule_store import chosen_model, load_rule
from kit.evaluation.thresholds import DecisionRule
from kit.serve.models import load_model

log = logging.getLogger(__name__)

__all__ = ["Decisions", "Predictor"]


@dataclass
class Decisions:
    """The rule applied to raw probabilities: what the submission would say for these texts."""

    probs: np.ndarray  # (n, K) after the rule's temperature: the submission's probabilities
    pred: np.ndarray  # class ids (n,), or multi-hot (n, K) for multilabel
    labels: list[list[str]]  # per text: its label names (one, except multilabel)


@dataclass
class Predictor:
    """One run's model and rule, ready to predict; `raw_probs` is the only model call."""

    run_name: str
    folder: Path
    model_name: str  # a registered kind (kit.models.kinds.ALL_KINDS)
    task: str
    labels: list[str]
    rule: DecisionRule
    params: Params
    metric: str | None
    validation: float | None  # the chosen model's validation score (metrics.json)
    device: str
    template: str | None  # how text columns become one text for this model
    _predict: Callable[[list[str]], np.ndarray] = field(repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    backend: str = "torch"  # what runs the model: sklearn, torch, onnx, onnx-int8 ("+": mixed)
    pair_columns: tuple[str, str] | None = None  # a `swap` view's columns (kit.data.pairs)

    @property
    def text_columns(self) -> list[str]:
        return list(self.params.competition.text_columns)

    @classmethod
    def load(cls, folder: str | Path, device: str | None = None,
             backend: str = "auto") -> Predictor:
        """Read the run folder and load its chosen model; a KitError says what is missing.

        `backend`: auto, torch, onnx or onnx-int8 (kit.models.onnx_export.choose_backend; auto
        takes the export's ONNX files on a CPU when `kit export --onnx` wrote them).
        """
        folder = Path(folder).resolve()
        params_file = folder / "params.yaml"
        if not params_file.is_file():
            raise KitError(
                f"{folder} is not a run folder (no params.yaml). Pass outputs/<run>, the folder "
                "./run_all.sh printed last."
            )
        params = params_from_dict(yaml.safe_load(params_file.read_text()), source=str(params_file))
        run = RunDir(path=folder, params=params, root=folder.parent)
        model_name = chosen_model(run)
        state = run.state()
        model = load_model(folder, params, model_name, device, backend=backend)
        predict, labels, dev, task, template = (model.predict, model.labels, model.device,
                                                model.task, model.template)
        rule = load_rule(run, task, labels)
        if list(rule.labels) != list(labels):
            raise KitError(
                f"{folder}: the decision rule's labels {rule.labels} differ from the model's "
                f"{labels}; decision_rule.json belongs to another model. Re-run 03_thresholds."
            )
        metric = state.best.metric if state.best else params.competition.metric
        validation = state.model_score(model_name, metric)
        log.info(f"Loaded run {params.name!r}: {model_name} on {dev} ({model.backend}), "
                 f"rule {rule.kind}"
                 + (f" (temperature {rule.temperature:.3g})" if rule.temperature else ""))
        return cls(params.name, folder, model_name, task, list(labels), rule, params,
                   metric, validation, dev, template, predict,
                   backend=model.backend, pair_columns=model.pair_columns)

    def render(self, df: pd.DataFrame, source: str) -> list[str]:
        """Texts from rows holding the run's text columns, as training rendered them.

        A missing column is an error naming it; empty texts are predicted, with a warning.
        """
        missing = [c for c in self.text_columns if c not in df.columns]
        if missing:
            raise KitError(
                f"{source}: missing text column(s) {missing}; run {self.run_name!r} reads "
                f"{self.text_columns} (competition.text_columns), and {source} has "
                f"{list(df.columns)[:20]}. Rename the column(s) in the input."
            )
        warn_empty_test_texts(df, self.params.competition, source)
        # with the `swap` view each text carries its swapped rendering
        return render_as_read(df, self.params.competition, source, self.template,
                              self.pair_columns)

    def render_records(self, rows: list[dict[str, Any]]) -> list[str]:
        """Texts from rows given as {text column: value} (a served request), as `render` does.

        No DataFrame (this runs once per request, on the server's event loop), except for the
        paired renderings of the `swap` view, which go through `render`.
        """
        if self.pair_columns:
            return self.render(pd.DataFrame(rows, columns=self.text_columns), "request")
        texts = render_records(rows, self.params.competition, self.template)
        blank = sum(not t.strip() for t in texts)
        if blank:
            log.warning(f"request: {blank} of {len(texts)} texts are empty: predicted from "
                        "empty text.")
        return texts

    def raw_probs(self, texts: list[str]) -> np.ndarray:
        """The model's probabilities (n, K) before the rule: what predictions/*.npz hold."""
        with self._lock:  # one model call at a time (the fast tokenizer is not thread-safe)
            return self._predict(list(texts))

    def decide(self, raw: np.ndarray) -> Decisions:
        """Labels and scores exactly as 04_submit makes them from test probabilities."""
        pred = self.rule.apply(raw)
        probs = self.rule.probabilities(raw)
        if self.task == "multilabel":
            names = [[self.labels[k] for k in np.flatnonzero(row)] for row in pred]
        else:
            names = [[self.labels[k]] for k in pred]
        return Decisions(probs, pred, names)

    def predict(self, texts: list[str]) -> Decisions:
        """Rendered texts to decisions: `decide(raw_probs(texts))`."""
        return self.decide(self.raw_probs(texts))

    def describe_rule(self) -> dict[str, Any]:
        """The applied rule as plain values (kind, temperature, thresholds or offsets)."""
        rule = self.rule
        out: dict[str, Any] = {"kind": rule.kind, "temperature": rule.temperature}
        for name in ("threshold", "thresholds", "bias"):
            if getattr(rule, name) is not None:
                out[name] = getattr(rule, name)
        if rule.metric:
            out["tuned_for"] = rule.metric
        return out
