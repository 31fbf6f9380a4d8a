"""Bad input, as a new user meets it on Kaggle-shaped data: one clear error, or handled with a log.

Each test builds the spoilt files on the spot and loads them as a run would.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kit.config.params import TfidfParams, params_from_dict
from kit.core.rundir import open_run
from kit.data.competition import load_competition
from kit.data.readers import read_table
from kit.data.split import make_split
from kit.errors import KitError
from kit.models.tfidf import fit_predict_tfidf
from kit.steps.train import train_models
from tests.conftest import topic_rows, write_competition


def _params(folder: Path, **competition) -> object:
    return params_from_dict({"competition": {"slug": "x", "data_dir": str(folder),
                                             **competition}})


def _topics(folder: Path, **write) -> Path:
    data = topic_rows(10)
    return write_competition(folder, data.iloc[::2], data.iloc[1::2], **write)


# Case 1: rows without text. Test rows are predicted (the submission needs every id); train
# rows are dropped, since there is nothing to learn from them.

def _blank_texts(path: Path, ids: list[int]) -> None:
    df = pd.read_csv(path)
    df.loc[df["id"].isin(ids[:1]), "text"] = "   "
    df.loc[df["id"].isin(ids[1:]), "text"] = None
    df.to_csv(path, index=False)


def test_empty_test_texts_are_predicted_with_a_warning(project: Path, capsys):
    test_csv = project / "data" / "topics" / "test.csv"
    blank = pd.read_csv(test_csv)["id"].head(3).tolist()
    _blank_texts(test_csv, blank)
    run = open_run("params/topics.yaml", overrides={"models": ["tfidf"]})
    comp = load_competition(run.params, project)
    out = capsys.readouterr().out
    assert f"test.csv: 3 rows of {len(comp.test)} with empty or missing text" in out, out
    assert f"first ids: {blank}" in out and "predicted from empty text" in out, out
    assert [comp.test_texts[i] for i in range(3)] == ["   ", "", ""]
    train_models(run, comp)
    preds = run.load_predictions("tfidf")
    assert preds.test_ids.tolist() == comp.test_ids.tolist()
    assert preds.test_probs.shape == (len(comp.test), 3)


def test_empty_train_texts_are_dropped_with_a_warning(tmp_path: Path, capsys):
    folder = _topics(tmp_path / "c")
    _blank_texts(folder / "train.csv", [3, 5])
    comp = load_competition(_params(folder), tmp_path)
    assert 3 not in comp.train_ids and 5 not in comp.train_ids and len(comp.train) == 13
    assert len(comp.train_texts) == len(comp.y) == 13
    out = capsys.readouterr().out
    assert "train.csv: dropped 2 rows of 15 with empty or missing text" in out, out
    assert "first ids: [3, 5]" in out and "nothing to learn from" in out, out


def test_train_without_any_text_names_the_text_columns(tmp_path: Path):
    folder = _topics(tmp_path / "c")
    _blank_texts(folder / "train.csv", list(range(1, 31)))
    with pytest.raises(KitError, match=r"every row has empty text in \['text'\].*text_columns"):
        load_competition(_params(folder), tmp_path)


# Case 5: a CSV separated by semicolons (Excel in much of Europe writes them).

def _semicolon_files(folder: Path) -> Path:
    _topics(folder)
    for name in ("train.csv", "test.csv", "sample_submission.csv"):
        df = pd.read_csv(folder / name)
        if "text" in df:
            df.loc[5, "text"] = "salt, pepper, and a late goal"  # line 7: commas in a text
        df.to_csv(folder / name, sep=";", index=False)
    return folder


def test_semicolon_csv_is_detected_and_said(tmp_path: Path, capsys):
    folder = _semicolon_files(tmp_path / "c")
    comp = load_competition(_params(folder), tmp_path)
    assert comp.labels == ["food", "sport", "tech"] and len(comp.train) == 15
    assert comp.train_texts[5] == "salt, pepper, and a late goal"
    assert "train.csv: fields separated by ';' (detected" in capsys.readouterr().out


def test_wrong_csv_delimiter_names_file_line_and_setting(tmp_path: Path):
    folder = _semicolon_files(tmp_path / "c")
    with pytest.raises(KitError) as err:
        load_competition(_params(folder, csv_delimiter=","), tmp_path)
    msg = str(err.value)
    for text in ("train.csv, line 7", "separated by ','", "looks separated by ';'",
                 "set `competition.csv_delimiter: ';'`"):
        assert text in msg, msg


def test_broken_csv_line_is_named(tmp_path: Path):
    folder = _topics(tmp_path / "c")
    lines = (folder / "train.csv").read_text().splitlines()
    lines[3] += ",an unquoted tail, with commas"
    (folder / "train.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(KitError) as err:
        load_competition(_params(folder), tmp_path)
    msg = str(err.value)
    for text in ("train.csv, line 4", "5 fields", "have 3", "double quotes"):
        assert text in msg, msg


# Case 6: a file saved in latin-1 / cp1252 (Windows, old Excel) instead of UTF-8.

def _latin1_files(folder: Path) -> Path:
    _topics(folder)
    df = pd.read_csv(folder / "train.csv")
    df.loc[5, "text"] = "café crème à la française"
    df.to_csv(folder / "train.csv", index=False, encoding="latin-1")
    return folder


def test_latin1_csv_is_read_with_a_warning_naming_the_encoding(tmp_path: Path, capsys):
    folder = _latin1_files(tmp_path / "c")
    comp = load_competition(_params(folder), tmp_path)
    assert comp.train_texts[5] == "café crème à la française"
    out = capsys.readouterr().out
    assert "train.csv is not UTF-8 (byte 0xe9 at offset" in out and "line 7" in out, out
    assert "read it as cp1252 (detected)" in out and "`competition.encoding`" in out, out


def test_declared_encoding_is_used_and_a_wrong_one_is_named(tmp_path: Path, capsys):
    folder = _latin1_files(tmp_path / "c")
    comp = load_competition(_params(folder, encoding="latin-1"), tmp_path)
    assert comp.train_texts[5] == "café crème à la française"
    assert "not UTF-8" not in capsys.readouterr().out
    offset = (folder / "train.csv").read_bytes().index(b"\xe9")
    with pytest.raises(KitError) as err:
        load_competition(_params(folder, encoding="utf-8"), tmp_path)
    msg = str(err.value)
    for text in ("train.csv", f"byte 0xe9 at offset {offset}, line 7", "not valid utf-8",
                 "`competition.encoding` is 'utf-8'"):
        assert text in msg, msg


def test_cp1251_russian_csv_is_detected(tmp_path: Path, capsys):
    path = tmp_path / "train.csv"
    text = "Привет мир, как у тебя дела сегодня? Погода хорошая."
    pd.DataFrame({"id": range(30), "text": text}).to_csv(path, index=False, encoding="cp1251")
    assert read_table(path)["text"].eq(text).all()
    assert "read it as cp1251 (detected)" in capsys.readouterr().out


def test_unknown_encoding_name_is_refused(tmp_path: Path):
    with pytest.raises(KitError, match=r"`competition\.encoding` is 'latin-9x'"):
        load_competition(_params(_topics(tmp_path / "c"), encoding="latin-9x"), tmp_path)


def test_json_lines_not_utf8_name_the_byte_and_the_setting(tmp_path: Path):
    path = tmp_path / "train.jsonl"
    path.write_bytes('{"id": 1, "text": "a"}\n{"id": 2, "text": "café"}\n'.encode("latin-1"))
    offset = path.read_bytes().index(b"\xe9")
    with pytest.raises(KitError, match=rf"byte 0xe9 at offset {offset}, line 2.*`competition.enc"):
        read_table(path)
    assert read_table(path, encoding="latin-1")["text"].tolist() == ["a", "café"]


def test_header_split_by_another_delimiter_names_it(tmp_path: Path):
    folder = _topics(tmp_path / "c")
    for name in ("train.csv", "test.csv", "sample_submission.csv"):
        pd.read_csv(folder / name).to_csv(folder / name, sep="|", index=False)
    with pytest.raises(KitError, match=r"looks separated by '\|'. Set `competition.csv_delimit"):
        load_competition(_params(folder, csv_delimiter=";"), tmp_path)
    assert len(load_competition(_params(folder), tmp_path).train) == 15


# Case 2: a train file with a header and no rows.

def test_header_only_train_file_is_refused_at_load(tmp_path: Path):
    folder = _topics(tmp_path / "c")
    (folder / "train.csv").write_text("id,text,label\n")
    with pytest.raises(KitError) as err:
        load_competition(_params(folder), tmp_path)
    msg = str(err.value)
    for text in (str(folder / "train.csv"), "has no rows", "`competition.train_file`"):
        assert text in msg, msg


# Cases 3 and 4: too few classes, or more labels than a binary task has.

def _binary(folder: Path, labels: list) -> Path:
    train = pd.DataFrame({"id": range(1, len(labels) + 1),
                          "text": [f"message {i}" for i in range(len(labels))], "label": labels})
    test = pd.DataFrame({"id": [1001, 1002], "text": ["one more", "and another"]})
    return write_competition(folder, train, test,
                             sample=pd.DataFrame({"id": [1001, 1002], "label": 0}))


def test_declared_class_missing_from_train_is_refused_at_load(tmp_path: Path):
    folder = _binary(tmp_path / "c", [1] * 12)
    with pytest.raises(KitError) as err:
        load_competition(_params(folder, task="binary", labels=["0", "1"]), tmp_path)
    msg = str(err.value)
    for text in (str(folder / "train.csv"), "no row has the label(s) ['0']",
                 "rows per label: {'1': 12}", "`competition.label_column` ('label')"):
        assert text in msg, msg


def test_single_class_train_file_says_so(tmp_path: Path):
    folder = _binary(tmp_path / "c", ["ham"] * 12)
    for task in ("binary", "multiclass"):
        with pytest.raises(KitError) as err:
            load_competition(_params(folder, task=task), tmp_path)
        msg = str(err.value)
        for text in ("train.csv: every row has the label 'ham' (12 rows)", "only one class",
                     "filtered"):
            assert text in msg, msg
        assert "multiclass" not in msg, msg


def test_stray_label_in_binary_file_names_its_rows(tmp_path: Path):
    labels = [0, 1] * 15
    labels[6] = labels[20] = 2
    folder = _binary(tmp_path / "c", labels)
    with pytest.raises(KitError) as err:
        load_competition(_params(folder, task="binary"), tmp_path)
    msg = str(err.value)
    for text in ("train.csv", "stray labels", "{'2': 2}", "2 rows, first ids: [7, 21]",
                 "fix or drop those rows", "`competition.label_map`"):
        assert text in msg, msg
    assert "multiclass" not in msg, msg


def test_stray_label_outside_declared_binary_labels_names_its_rows(tmp_path: Path):
    labels = [0, 1] * 15
    labels[6] = 2
    folder = _binary(tmp_path / "c", labels)
    with pytest.raises(KitError) as err:
        load_competition(_params(folder, task="binary", labels=["0", "1"]), tmp_path)
    msg = str(err.value)
    for text in ("train.csv: 1 row with labels outside", "{'2': 1}", "first ids: [7]",
                 "Fix or drop those rows"):
        assert text in msg, msg
    assert "Add them to `competition.labels`" not in msg, msg


def test_binary_file_with_three_real_classes_suggests_multiclass(tmp_path: Path):
    folder = _binary(tmp_path / "c", ["a", "b", "c"] * 10)
    with pytest.raises(KitError, match=r"has 3 labels: .*set `competition.task: multiclass`"):
        load_competition(_params(folder, task="binary"), tmp_path)


def test_declared_class_absent_from_train_is_a_warning_in_multiclass(tmp_path: Path, capsys):
    folder = _topics(tmp_path / "c")
    comp = load_competition(_params(folder, labels=["food", "sport", "tech", "travel"]),
                            tmp_path)
    assert comp.labels == ["food", "sport", "tech", "travel"]
    assert "no row has the label(s) ['travel']" in capsys.readouterr().out


# The split and the models: refused before fitting, with the setting to change.

def test_group_column_missing_or_too_coarse_is_named(tmp_path: Path):
    comp = load_competition(_params(_topics(tmp_path / "c")), tmp_path)
    with pytest.raises(KitError, match=r"`validation.group_column` is 'problem_id'.*no such col"):
        make_split(comp, 0.2, 0, group_column="problem_id")
    comp.train["problem_id"] = comp.train["id"] % 3
    with pytest.raises(KitError, match=r"has 3 distinct values.*needs at least 5"):
        make_split(comp, 0.2, 0, group_column="problem_id")


def test_split_json_leaving_one_class_to_train_on_is_refused(project: Path):
    run = open_run("params/topics.yaml", overrides={"models": ["tfidf"]})
    comp = load_competition(run.params, project)
    food = comp.train_ids[comp.y == comp.labels.index("food")].tolist()
    sport = comp.train_ids[comp.y == comp.labels.index("sport")].tolist()
    (run.path / "split.json").write_text(json.dumps({"validation_ids": food + sport}))
    with pytest.raises(KitError, match=r"leaves one class to train on: .* training part \{'tech'"):
        train_models(run, comp)
    (run.path / "split.json").write_text(json.dumps({"validation_ids": [9999]}))
    with pytest.raises(KitError, match=r"1 validation ids that are not in the training data"):
        train_models(run, comp)


def test_tfidf_min_df_keeping_no_word_names_the_setting():
    texts = ["hello world", "foo bar", "green tea", "zz top"]
    with pytest.raises(KitError, match=r"`tfidf.min_df` is 3: lower it"):
        fit_predict_tfidf(texts, np.array([0, 1, 0, 1]), [texts], TfidfParams(min_df=3),
                          "binary", 2, 0)
