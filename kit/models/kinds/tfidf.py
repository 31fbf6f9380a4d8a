"""The TF-IDF + logistic-regression kind: fit on a fold, its joblib pipeline, load to predict."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kit.config.params import Params
from kit.core.rundir import RunDir
from kit.data.competition import Competition
from kit.data.folds import Fold
from kit.evaluation.rule_store import rule_labels
from kit.models.kinds.base import FitOutput, LoadedModel, model_dir
from kit.models.tfidf import PIPELINE_FILE, fit_predict_tfidf, load_pipeline, predict_tfidf
from kit.tracking import Tracker

__all__ = ["TFIDF"]


class TfidfKind:
    """Word and character n-gram TF-IDF into logistic regression (kit.models.tfidf)."""

    name = "tfidf"
    params_section = "tfidf"
    artifact = PIPELINE_FILE

    def fit(self, run: RunDir, comp: Competition, fold: Fold, tracker: Tracker,
            callbacks: list) -> FitOutput:
        params = run.params
        texts = comp.train_texts
        val, test = fit_predict_tfidf(
            [texts[i] for i in fold.train_rows], comp.y[fold.train_rows],
            [[texts[i] for i in fold.val_rows], comp.test_texts],
            params.tfidf, comp.task, len(comp.labels), params.seed,
            save_to=model_dir(run, self.name, fold) / self.artifact,
        )
        return val, test, {}

    def load(self, folder: Path, params: Params, model_dir: Path, device: str | None,
             labels: list[str] | None) -> LoadedModel:
        labels = list(labels or rule_labels(folder, params))
        pipeline = load_pipeline(model_dir / self.artifact)
        task = params.competition.task

        def predict(texts: list[str]) -> np.ndarray:
            return predict_tfidf(pipeline, texts, task, len(labels))

        return LoadedModel(predict, labels, "cpu", task, params.competition.text_template)


TFIDF = TfidfKind()
