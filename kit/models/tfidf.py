"""The TF-IDF + logistic-regression baseline: word and character n-grams, with scikit-learn."""

from __future__ import annotations

import io
from pathlib import Path

import joblib
import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import FeatureUnion, Pipeline

from kit.config.params import TfidfParams
from kit.core.atomic import write_atomic
from kit.errors import KitError

PIPELINE_FILE = "pipeline.joblib"  # under models/tfidf/ of the run folder, for kit.serve


def build_tfidf(cfg: TfidfParams, task: str, seed: int) -> Pipeline:
    """An unfitted pipeline: TF-IDF features, then a (one-vs-rest for multilabel) classifier."""
    features = [
        ("word", TfidfVectorizer(ngram_range=(1, cfg.word_ngram_max), sublinear_tf=cfg.sublinear_tf,
                                 min_df=cfg.min_df, max_features=cfg.max_features,
                                 strip_accents="unicode")),
    ]
    if cfg.char_ngrams:
        features.append(
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5),
                                     sublinear_tf=cfg.sublinear_tf, min_df=cfg.min_df,
                                     max_features=cfg.max_features))
        )
    clf = LogisticRegression(
        C=cfg.C,
        class_weight=None if cfg.class_weight == "none" else cfg.class_weight,
        max_iter=cfg.max_iter,
        random_state=seed,
    )
    if task == "multilabel":
        clf = OneVsRestClassifier(clf)
    return Pipeline([("features", FeatureUnion(features)), ("clf", clf)])


def fit_predict_tfidf(train_texts: list[str], y: np.ndarray, predict_on: list[list[str]],
                      cfg: TfidfParams, task: str, n_classes: int, seed: int,
                      save_to: Path | None = None) -> list[np.ndarray]:
    """Fit on the training texts; return probabilities (n, K) for each list in `predict_on`.

    `save_to`: also keep the fitted pipeline there (joblib, atomically) for serving.
    """
    if task != "multilabel" and len(np.unique(y)) < 2:
        raise KitError(
            f"TF-IDF: all {len(y)} training rows have one class (index {y[0] if len(y) else '-'} "
            f"of {n_classes}); logistic regression needs two. Train on rows of at least two "
            "classes (see `validation.size` and the training file's labels)."
        )
    try:
        model = build_tfidf(cfg, task, seed).fit(train_texts, y)
    except ValueError as err:
        # scikit-learn's words for "the vectorizer kept no n-gram"
        if not any(s in str(err) for s in ("empty vocabulary", "no terms remain", "min_df")):
            raise
        fix = (f"`tfidf.min_df` is {cfg.min_df}: lower it (a word is kept only if at least that "
               "many texts hold it)." if cfg.min_df > 1 else "The texts hold no word of two "
               "letters or more: check `competition.text_columns` and `text_template`.")
        raise KitError(f"TF-IDF kept no word of the {len(train_texts)} training texts "
                       f"(scikit-learn: {err}). {fix}") from err
    if save_to is not None:
        save_pipeline(model, save_to)
    return [predict_tfidf(model, texts, task, n_classes) for texts in predict_on]


def predict_tfidf(model: Pipeline, texts: list[str], task: str, n_classes: int) -> np.ndarray:
    """Probabilities (n, K) of a fitted pipeline: one column per class, seen in training or not."""
    if not len(texts):  # a full-data refit has no validation rows; scikit-learn refuses 0 rows
        return np.zeros((0, n_classes))
    probs = model.predict_proba(texts)
    if task != "multilabel" and probs.shape[1] != n_classes:
        # A class absent from training gets no column from scikit-learn: add it back as 0.
        full = np.zeros((len(texts), n_classes))
        full[:, model.classes_] = probs
        probs = full
    return np.asarray(probs, dtype=np.float64)


def save_pipeline(model: Pipeline, path: Path) -> Path:
    """The fitted pipeline as one joblib file, written atomically."""
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    return write_atomic(Path(path), buffer.getvalue())


def load_pipeline(path: Path) -> Pipeline:
    """A pipeline saved by `save_pipeline` (a pickle: load only run folders you made)."""
    path = Path(path)
    if not path.is_file():
        raise KitError(
            f"No fitted TF-IDF pipeline at {path}: this run was trained before pipelines were "
            "saved. Train the run again under a new name to serve it."
        )
    return joblib.load(path)
