"""Serving predicts what 04_submit submitted: same model, same rule, same texts; `kit predict`."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from kit.cli import main
from kit.errors import KitError
from kit.serve.predict_file import predict_file
from kit.serve.predictor import Predictor
from tests.serve_helpers import BuiltRun, build_run

# One torch thread (and so one ONNX Runtime thread) for the module, its trained fixtures
# included (tests/conftest.py): the 2 cores are shared.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tfidf_run(tmp_path_factory) -> BuiltRun:
    return build_run(tmp_path_factory.mktemp("serve-tfidf"))


@pytest.fixture(scope="module")
def transformer_run(tmp_path_factory) -> BuiltRun:
    import resume_worker as rw

    tiny = rw.build_tiny_model(tmp_path_factory.mktemp("tiny") / "bert")
    quick = {"model": str(tiny), "max_length": 32, "max_steps": 4, "eval_steps": 2,
             "save_steps": 2, "batch_size": 8, "eval_batch_size": 16, "lr": 5e-3}
    return build_run(tmp_path_factory.mktemp("serve-bert"), models=["transformer"],
                     transformer=quick)


def submitted_labels(run: BuiltRun) -> list[str]:
    by_id = run.submission.set_index("id")["label"]
    return [by_id[i] for i in run.test["id"]]


def test_tfidf_served_predictions_equal_the_submission(tfidf_run: BuiltRun):
    assert (tfidf_run.path / "models" / "tfidf" / "pipeline.joblib").is_file()
    predictor = Predictor.load(tfidf_run.path)
    assert predictor.model_name == "tfidf" and predictor.metric == "f1_micro"
    np.testing.assert_array_equal(predictor.raw_probs(tfidf_run.test_texts), tfidf_run.test_probs)
    decided = predictor.predict(tfidf_run.test_texts)
    np.testing.assert_array_equal(decided.probs, tfidf_run.submit_probs)
    assert [names[0] for names in decided.labels] == submitted_labels(tfidf_run)
    assert predictor.rule.temperature is not None  # the calibrated rule really is applied


def test_transformer_served_predictions_equal_the_submission(transformer_run: BuiltRun):
    predictor = Predictor.load(transformer_run.path, device="cpu")
    assert predictor.model_name == "transformer" and predictor.device == "cpu"
    texts = transformer_run.test_texts
    decided = predictor.predict(texts)
    np.testing.assert_allclose(decided.probs, transformer_run.submit_probs, rtol=0, atol=1e-6)
    assert [names[0] for names in decided.labels] == submitted_labels(transformer_run)
    # One text at a time (no neighbours to pad to) gives the same probabilities.
    one = np.vstack([predictor.raw_probs([t]) for t in texts[:5]])
    np.testing.assert_allclose(one, transformer_run.test_probs[:5], rtol=0, atol=1e-6)


def test_predict_file_streams_chunks_and_writes_labels_and_probabilities(tfidf_run, tmp_path,
                                                                         capsys):
    test = tfidf_run.test[["id", "text"]].copy()
    test.loc[test.index[1], "text"] = None  # an empty text is predicted, with a warning
    src = tmp_path / "new.csv"
    test.to_csv(src, index=False)
    assert main(["predict", str(tfidf_run.path), "--input", str(src), "--chunk-rows", "7"]) == 0
    out = capsys.readouterr().out
    assert "1 row of 7 with empty or missing text" in out and "predicted from empty text" in out
    assert f"predict: {len(test)} rows" in out
    got = pd.read_csv(tmp_path / "new.predictions.csv")
    assert list(got.columns) == ["id", "label", "prob_food", "prob_sport", "prob_tech"]
    assert got["id"].tolist() == test["id"].tolist()
    keep = np.arange(len(test)) != 1
    np.testing.assert_array_equal(got.iloc[:, 2:].to_numpy()[keep], tfidf_run.submit_probs[keep])
    assert got["label"][keep].tolist() == np.array(submitted_labels(tfidf_run))[keep].tolist()

    # The same rows as gzipped JSON lines, in one chunk, without ids: the same predictions.
    lines = tmp_path / "new.jsonl.gz"
    with gzip.open(lines, "wt") as fh:
        for text in test["text"]:
            fh.write(json.dumps({"text": text}) + "\n")
    result = predict_file(Predictor.load(tfidf_run.path), lines, tmp_path / "o.csv")
    again = pd.read_csv(result.output)
    assert result.rows == len(test) and again["id"].tolist() == list(range(len(test)))
    np.testing.assert_array_equal(again.iloc[:, 1:].to_numpy(), got.iloc[:, 1:].to_numpy())


def test_predict_file_names_a_missing_text_column(tfidf_run, tmp_path, capsys):
    src = tmp_path / "bad.csv"
    pd.DataFrame({"id": [1], "body": ["soup"]}).to_csv(src, index=False)
    assert main(["predict", str(tfidf_run.path), "--input", str(src)]) == 2
    err = capsys.readouterr().err
    assert "missing text column(s) ['text']" in err and "has ['id', 'body']" in err
    assert not (tmp_path / "bad.predictions.csv").exists()  # nothing half written


def test_run_folders_that_cannot_be_served_say_why(tfidf_run, tmp_path):
    with pytest.raises(KitError, match="not a run folder"):
        Predictor.load(tmp_path)
    broken = tmp_path / "copy"
    broken.mkdir()
    for name in ("params.yaml", "metrics.json", "decision_rule.json"):
        (broken / name).write_text((tfidf_run.path / name).read_text())
    with pytest.raises(KitError, match="No fitted TF-IDF pipeline"):
        Predictor.load(broken)


def test_request_rows_render_as_file_rows(tfidf_run: BuiltRun, caplog):
    """A request's {column: value} rows give the texts a file's rows give (no DataFrame)."""
    import dataclasses

    from kit.data.texts import render_records, render_texts

    predictor = Predictor.load(tfidf_run.path)
    rows = [{"text": t} for t in tfidf_run.test_texts[:3]] + [{"text": ""}]
    assert predictor.render_records(rows) == predictor.render(pd.DataFrame(rows), "file")
    assert "1 of 4 texts are empty" in caplog.text
    two = dataclasses.replace(predictor.params.competition, text_columns=["title", "body"],
                              text_template="{title}: {body}")
    rows = [{"title": "Goal", "body": "late win"}, {"title": "CPU", "body": ""}]
    assert render_records(rows, two) == render_texts(pd.DataFrame(rows), two, "file") == [
        "Goal: late win", "CPU: "]
