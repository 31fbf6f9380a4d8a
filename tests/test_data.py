"""Competition data: discovery, label handling, and a clear error for each kind of bad input."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kit.config.params import CompetitionParams, params_from_dict
from kit.data.competition import (
    encode_labels,
    load_competition,
    map_label,
    split_labels,
)
from kit.data.readers import read_table
from kit.errors import KitError
from tests.conftest import topic_rows, write_competition


def _params(folder: Path, **competition) -> object:
    return params_from_dict({"competition": {"slug": "x", "data_dir": str(folder),
                                             **competition}})


def _good(folder: Path) -> Path:
    data = topic_rows(10)
    return write_competition(folder, data.iloc[::2], data.iloc[1::2])


def test_loads_a_kaggle_layout_folder(tmp_path: Path):
    comp = load_competition(_params(_good(tmp_path / "c")), tmp_path)
    assert comp.labels == ["food", "sport", "tech"]
    assert len(comp.train_texts) == 15 and len(comp.test_texts) == 15
    assert comp.y.dtype == np.int64 and set(comp.y) == {0, 1, 2}


def test_text_template_joins_several_columns(tmp_path: Path):
    train = pd.DataFrame({"id": [1, 2], "q": ["1+1?", "2+2?"], "a": ["2", "5"], "label": [1, 0]})
    test = pd.DataFrame({"id": [3], "q": ["3+3?"], "a": ["6"]})
    write_competition(tmp_path, train, test, sample=pd.DataFrame({"id": [3], "label": [0]}))
    params = _params(tmp_path, text_columns=["q", "a"], text_template="Q: {q}\nA: {a}",
                     task="binary")
    comp = load_competition(params, tmp_path)
    assert comp.train_texts[0] == "Q: 1+1?\nA: 2"
    assert comp.labels == ["0", "1"] and comp.y.tolist() == [1, 0]


def test_demo_slug_is_built_under_data(tmp_path: Path):
    params = params_from_dict({"competition": {"slug": "champ-math-topic",
                                               "text_columns": ["problem"]}})
    comp = load_competition(params, tmp_path)
    assert comp.folder == tmp_path / "data" / "champ-math-topic"
    assert len(comp.labels) == 5 and comp.answer_key is not None


def test_offline_unknown_slug_says_what_to_put_where(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no kaggle credentials
    for var in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(var, raising=False)
    params = params_from_dict({"competition": {"slug": "no-such-comp"}})
    with pytest.raises(KitError) as err:
        load_competition(params, tmp_path)
    assert "data/no-such-comp" in str(err.value) and "train.csv" in str(err.value)


BAD_INPUTS = {
    "missing file": (lambda f: (f / "test.csv").unlink(), ["test.csv", "not found"]),
    "missing column": (lambda f: _edit(f, "train.csv", lambda d: d.drop(columns=["text"])),
                       ["train.csv", "missing column", "text"]),
    "NaN label": (lambda f: _edit(f, "train.csv", lambda d: d.assign(
        label=d["label"].where(d["id"] != 5, None))), ["train.csv", "missing labels", "5"]),
    "duplicate ids": (lambda f: _edit(f, "train.csv", lambda d: d.assign(
        id=d["id"].where(d["id"] != 5, 1))), ["train.csv", "duplicate ids", "[1, 1]"]),
    "test ids differ from sample": (lambda f: _edit(f, "sample_submission.csv", lambda d: d.assign(
        id=d["id"] + 1000)), ["test.csv", "sample_submission.csv", "differ"]),
}


def _edit(folder: Path, name: str, change) -> None:
    path = folder / name
    change(pd.read_csv(path)).to_csv(path, index=False)


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_gets_a_clear_error(tmp_path: Path, case: str):
    folder = _good(tmp_path / "c")
    spoil, expected = BAD_INPUTS[case]
    spoil(folder)
    with pytest.raises(KitError) as err:
        load_competition(_params(folder), tmp_path)
    for text in expected:
        assert text in str(err.value), f"{text!r} not in: {err.value}"


def test_label_outside_declared_classes(tmp_path: Path):
    folder = _good(tmp_path / "c")
    with pytest.raises(KitError, match=r"outside `competition.labels` \['food', 'sport'\]"):
        load_competition(_params(folder, labels=["food", "sport"]), tmp_path)


def test_label_map_exact_first_then_longest_prefix():
    mapping = {"q-fin.": "Economics", "q-bio.": "Biology", "q-": "Other", "cs.AI": "AI",
               "cs.": "Computer Science"}
    assert map_label("q-fin.ST", mapping) == "Economics"
    assert map_label("q-bio.GN", mapping) == "Biology"
    assert map_label("cs.AI", mapping) == "AI"
    assert map_label("cs.LG", mapping) == "Computer Science"
    assert map_label("math.CO", mapping) is None


def test_multilabel_from_delimited_and_list_cells():
    df = pd.DataFrame({"id": [1, 2, 3], "label": ["cs.AI math.CO", "['q-fin.ST']", "cs.LG"]})
    comp = CompetitionParams(task="multilabel", label_map={"cs.": "CS", "math.": "Math",
                                                           "q-fin.": "Economics"})
    y, labels = encode_labels(df, comp, "train.csv")
    assert labels == ["CS", "Economics", "Math"]
    assert y.tolist() == [[1, 0, 1], [0, 1, 0], [1, 0, 0]]
    assert split_labels(["a", "b"], None) == ["a", "b"]


def test_unmapped_labels_are_named():
    df = pd.DataFrame({"id": [1, 2], "label": ["cs.AI", "astro-ph"]})
    comp = CompetitionParams(task="multiclass", label_map={"cs.": "CS"})
    with pytest.raises(KitError, match="astro-ph"):
        encode_labels(df, comp, "train.csv")


def test_gzipped_json_lines_are_streamed(tmp_path: Path):
    import gzip
    import json

    path = tmp_path / "reviews.jsonl.gz"
    with gzip.open(path, "wt") as f:
        for i in range(120):
            f.write(json.dumps({"id": i, "text": f"review {i}", "genre": "x", "extra": "y"}) + "\n")
    df = read_table(path, columns=["id", "text", "genre"], max_rows=100)
    assert list(df.columns) == ["id", "text", "genre"] and len(df) == 100


def test_binary_needs_a_positive_label_when_ambiguous(tmp_path: Path):
    train = pd.DataFrame({"id": [1, 2], "text": ["a", "b"], "label": ["cat", "dog"]})
    test = pd.DataFrame({"id": [3], "text": ["c"]})
    write_competition(tmp_path, train, test)
    with pytest.raises(KitError, match="positive_label"):
        load_competition(_params(tmp_path, task="binary"), tmp_path)
    comp = load_competition(_params(tmp_path, task="binary", positive_label="cat"), tmp_path)
    assert comp.labels == ["dog", "cat"] and comp.y.tolist() == [1, 0]


def test_shipped_arxiv_label_map_sorts_the_tricky_codes():
    from kit.config.params import load_params
    from tests.conftest import REPO

    label_map = load_params(REPO / "params" / "arxiv-domains.yaml").competition.label_map
    expect = {"q-fin.ST": "Economics", "q-bio.GN": "Biology", "math-ph": "Physics",
              "math.CO": "Mathematics", "hep-th": "Physics", "econ.EM": "Economics",
              "eess.SP": "Electrical Engineering", "stat.ML": "Statistics",
              "cs.CL": "Computer Science", "astro-ph.GA": "Physics", "quant-ph": "Physics"}
    assert {code: map_label(code, label_map) for code in expect} == expect
    assert len(set(label_map.values())) == 7


def test_train_without_id_column_is_numbered(tmp_path: Path):
    data = topic_rows(4)
    write_competition(tmp_path, data.iloc[::2].drop(columns=["id"]), data.iloc[1::2])
    comp = load_competition(_params(tmp_path), tmp_path)
    assert comp.train_ids.tolist() == list(range(6))


def test_bad_json_line_is_named(tmp_path: Path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"id": 1, "text": "a"}\n{"id": 2, "text": \n')
    with pytest.raises(KitError, match=r"train\.jsonl, line 2: not valid JSON"):
        read_table(path)


def test_ids_keep_their_written_form_across_csv_and_json_lines(tmp_path: Path):
    """arXiv ids "2101.00010" read as numbers became 2101.0001: test.jsonl and the sample's
    ids then differed, and a submission would carry ids Kaggle does not know."""
    import json

    from kit.submission.build import build_submission, validate_submission

    ids = ["2101.00010", "2101.00020", "0704.0001"]
    (tmp_path / "train.jsonl").write_text("".join(
        json.dumps({"id": f"hep-th/99010{i}", "text": f"paper {i}", "label": "ab"[i % 2]}) + "\n"
        for i in range(4)))
    (tmp_path / "test.jsonl").write_text("".join(
        json.dumps({"id": i, "text": "a paper"}) + "\n" for i in ids))
    pd.DataFrame({"id": ids, "label": "a"}).to_csv(tmp_path / "sample_submission.csv",
                                                   index=False)
    comp = load_competition(_params(tmp_path, train_file="train.jsonl",
                                    test_file="test.jsonl"), tmp_path)
    assert comp.test_ids.tolist() == ids and comp.sample_submission["id"].tolist() == ids
    sub = build_submission(comp, np.zeros(3, dtype=int), np.ones((3, 2)) / 2)
    validate_submission(sub, comp)
    sub.to_csv(tmp_path / "submission.csv", index=False)
    assert (tmp_path / "submission.csv").read_text().split()[1:] == [f"{i},a" for i in ids]
    # Plain integer ids stay integers, whichever file they come from.
    (tmp_path / "n.jsonl").write_text('{"id": 5}\n{"id": 12}\n')
    (tmp_path / "n.csv").write_text("id\n5\n12\n")
    assert read_table(tmp_path / "n.jsonl", id_column="id")["id"].tolist() == [5, 12]
    assert read_table(tmp_path / "n.csv", id_column="id")["id"].tolist() == [5, 12]
