"""The TF-IDF + logistic-regression baseline: word and character n-grams, with scikit-learn."""

from __future__ import annotations

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import FeatureUnion, Pipeline

from kit.config.params import TfidfParams
from kit.errors import KitError


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
                      cfg: TfidfParams, task: str, n_classes: int, seed: int) -> list[np.ndarray]:
    """Fit on the training texts; return probabilities (n, K) for each list in `predict_on`."""
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
    out = []
    for texts in predict_on:
        probs = model.predict_proba(texts)
        if task != "multilabel" and probs.shape[1] != n_classes:
            # A class absent from training gets no column from scikit-learn: add it back as 0.
            full = np.zeros((len(texts), n_classes))
            full[:, model.classes_] = probs
            probs = full
        out.append(np.asarray(probs, dtype=np.float64))
    return out
