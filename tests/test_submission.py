"""Submission building, validation (each malformed file refused with its message), local score."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kit.config.params import params_from_dict
from kit.data.competition import load_competition
from kit.errors import KitError
from kit.submission.build import build_submission, score_local, validate_submission
from tests.conftest import topic_rows, write_competition


@pytest.fixture
def comp(tmp_path: Path):
    data = topic_rows(6)
    test = data.iloc[1::2]
    answer = test[["id", "label"]].assign(
        Usage=["Public" if i % 2 else "Private" for i in range(len(test))])
    write_competition(tmp_path, data.iloc[::2], test, answer=answer)
    params = params_from_dict({"competition": {"slug": "t", "data_dir": str(tmp_path)}})
    return load_competition(params, tmp_path)


def _perfect(comp) -> pd.DataFrame:
    truth = comp.answer_key.set_index("id").loc[comp.test_ids, "label"]
    pred = np.array([comp.labels.index(v) for v in truth])
    return build_submission(comp, pred, np.eye(3)[pred])


def test_build_follows_the_sample_and_scores_perfectly(comp):
    sub = _perfect(comp)
    validate_submission(sub, comp)
    assert sub["id"].tolist() == comp.sample_submission["id"].tolist()
    scores = score_local(sub, comp, "f1_micro")
    assert scores["local_public"] == 1.0 and scores["local_private"] == 1.0


def test_local_score_sees_mistakes(comp):
    sub = _perfect(comp)
    sub.loc[:3, "label"] = ["tech" if v == "food" else "food" for v in sub.loc[:3, "label"]]
    scores = score_local(sub, comp, "accuracy")
    assert min(scores["local_public"], scores["local_private"]) < 1.0


def test_classes_cut_from_training_count_as_missed_not_a_crash(comp, caplog):
    """`competition.max_rows` can leave a class out of train that the answer key still has."""
    known = comp.labels[:2]
    comp.labels = known  # as if the training rows had shown two of the three topics
    truth = comp.answer_key.set_index("id").loc[comp.test_ids, "label"]
    pred = np.array([known.index(v) if v in known else 0 for v in truth])
    sub = build_submission(comp, pred, np.eye(2)[pred])
    scores = score_local(sub, comp, "accuracy")
    seen = truth.isin(known).mean()
    assert 0 < min(scores["local_public"], scores["local_private"]) < 1.0
    assert (scores["local_public"] + scores["local_private"]) / 2 == pytest.approx(seen, abs=0.2)
    assert "never showed" in caplog.text and "tech" in caplog.text


MALFORMED = {
    "extra column": (lambda s: s.assign(extra=1), "columns"),
    "missing row": (lambda s: s.iloc[:-1], "rows"),
    "duplicate id": (lambda s: s.assign(id=[s["id"].iloc[0]] * 2 + s["id"].iloc[2:].tolist()),
                     "repeats ids"),
    "other order": (lambda s: s.iloc[::-1].reset_index(drop=True), "other order"),
    "NaN": (lambda s: s.assign(label=[None, *s["label"].iloc[1:].tolist()]), "missing values"),
    "unknown label": (lambda s: s.assign(label=["music", *s["label"].iloc[1:].tolist()]),
                      "outside the competition's labels"),
}


@pytest.mark.parametrize("case", MALFORMED, ids=list(MALFORMED))
def test_malformed_submission_is_refused(comp, case):
    spoil, message = MALFORMED[case]
    with pytest.raises(KitError, match=message):
        validate_submission(spoil(_perfect(comp)), comp)


def test_binary_labels_keep_the_sample_dtype(tmp_path: Path):
    train = pd.DataFrame({"id": range(6), "text": list("abcdef"), "label": [0, 1] * 3})
    test = pd.DataFrame({"id": [10, 11], "text": ["g", "h"]})
    write_competition(tmp_path, train, test, sample=pd.DataFrame({"id": [10, 11], "label": 0}))
    comp = load_competition(params_from_dict({"competition": {
        "slug": "b", "data_dir": str(tmp_path), "task": "binary"}}), tmp_path)
    sub = build_submission(comp, np.array([1, 0]), np.array([[0.2, 0.8], [0.9, 0.1]]))
    assert sub["label"].tolist() == [1, 0] and sub["label"].dtype.kind == "i"
    validate_submission(sub, comp)
    with pytest.raises(KitError, match="dtype"):
        validate_submission(sub.assign(label=sub["label"].astype(str)), comp)


def test_multilabel_names_holding_the_delimiter_validate_and_score(tmp_path: Path):
    """arxiv-multilabel maps codes to "Computer Science" etc. and joins labels with " "."""
    train = pd.DataFrame({"id": [1, 2, 3], "text": ["a", "b", "c"],
                          "label": ["cs.AI math.CO", "stat.ML", "cs.LG"]})
    test = pd.DataFrame({"id": [4, 5, 6], "text": ["d", "e", "f"]})
    answer = pd.DataFrame({"id": [4, 5, 6], "label": ["Computer Science Mathematics",
                                                      "Statistics", "Computer Science"],
                           "Usage": ["Public", "Private", "Public"]})
    write_competition(tmp_path, train, test, answer=answer)
    params = params_from_dict({"competition": {
        "slug": "t", "data_dir": str(tmp_path), "task": "multilabel", "label_delimiter": " ",
        "label_map": {"cs.": "Computer Science", "math.": "Mathematics", "stat.": "Statistics"}}})
    comp = load_competition(params, tmp_path)
    assert comp.labels == ["Computer Science", "Mathematics", "Statistics"]
    pred = np.array([[1, 1, 0], [0, 0, 1], [1, 0, 0]])
    sub = build_submission(comp, pred, pred.astype(float), delimiter=" ")
    assert sub["label"].tolist() == answer["label"].tolist()
    validate_submission(sub, comp, delimiter=" ")
    scores = score_local(sub, comp, "f1_micro", delimiter=" ")
    assert scores["local_public"] == 1.0 and scores["local_private"] == 1.0
    with pytest.raises(KitError, match="outside the competition's labels"):
        validate_submission(sub.assign(label="Computer Sciences"), comp, delimiter=" ")
