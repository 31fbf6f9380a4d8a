"""The streamed data path: one-pass stratified sample, the Arrow cache, bad records by line."""

from __future__ import annotations

import gzip
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kit.config.params import params_from_dict
from kit.data.cache import EVENTS
from kit.data.competition import load_competition
from kit.data.labelmap import LabelKeys, mapping_report, rule_for
from kit.data.stream import StreamStats, iter_chunks, stratified_sample
from kit.errors import KitError
from tests.helpers.arxiv_shaped import write_arxiv_jsonl

ARXIV = {"id_column": "id", "text_columns": ["title", "abstract"], "label_column": "categories",
         "label_delimiter": " ", "train_file": "train.jsonl", "test_file": "test.jsonl",
         "label_map": {"math-ph": "Physics", "math.": "Mathematics", "cs.": "CS",
                       "stat.": "Stats", "hep-": "Physics", "quant-ph": "Physics",
                       "astro-ph": "Physics", "cond-mat": "Physics", "physics.": "Physics",
                       "gr-qc": "Physics", "nucl-": "Physics", "nlin.": "Physics",
                       "eess.": "EE", "q-bio.": "Bio", "q-fin.": "Econ", "econ.": "Econ",
                       "alg-geom": "Mathematics", "funct-an": "Mathematics",
                       "chao-dyn": "Physics", "solv-int": "Physics", "cmp-lg": "CS",
                       "bayes-an": "Stats"}}


def arxiv_folder(folder: Path, records: int = 1500, gz: bool = False) -> Path:
    """An arXiv-shaped competition: train.jsonl[.gz], test.jsonl, sample_submission.csv."""
    folder.mkdir(parents=True, exist_ok=True)
    plain = folder / "train.jsonl"
    write_arxiv_jsonl(plain, records=records, seed=0)
    lines = plain.read_bytes().splitlines(keepends=True)
    # generated ids repeat every 12x100000 records only; make them unique anyway
    rows = [json.loads(line) | {"id": f"r{i}"} for i, line in enumerate(lines)]
    body = "".join(json.dumps(r) + "\n" for r in rows).encode()
    if gz:
        plain.unlink()
        with gzip.open(folder / "train.jsonl.gz", "wb") as f:
            f.write(body)
    else:
        plain.write_bytes(body)
    test = [{"id": f"t{i}", "title": "a title", "abstract": "an abstract"} for i in range(5)]
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    pd.DataFrame({"id": [r["id"] for r in test], "categories": "CS"}).to_csv(
        folder / "sample_submission.csv", index=False)
    return folder


def _params(folder: Path, tmp: Path, **extra):
    return params_from_dict({"competition": {"slug": "arxiv", "data_dir": str(folder),
                                             "answer_key_file": None, **ARXIV, **extra},
                             "output_dir": str(tmp / "outputs")})


def test_streamed_sample_has_the_in_memory_sample_class_counts(tmp_path: Path):
    folder = arxiv_folder(tmp_path / "c")
    comp = load_competition(_params(folder, tmp_path, sample_per_class=40), tmp_path)
    # The reference: the whole file in memory, classes by the same rules, pandas' sample.
    params = _params(folder, tmp_path)
    keys = LabelKeys(params.competition)
    cells = [json.loads(line)["categories"] for line in (folder / "train.jsonl").open()]
    classes = [keys(c) for c in cells]
    picked = stratified_sample(classes, 40, seed=0)
    expected = Counter(classes[i] for i in picked)
    streamed = Counter(comp.labels[k] for k in comp.y)
    assert streamed == expected
    assert max(streamed.values()) == 40 and min(streamed.values()) < 40  # a rare class: all
    assert comp.data_info["rows_read"] == 1500 and comp.data_info["rows_kept"] == len(comp.y)
    assert comp.label_codes == dict(Counter(c.split()[0] for c in cells))  # the whole file


def test_cache_is_hit_on_rerun_and_missed_when_a_param_or_the_file_changes(tmp_path: Path):
    folder = arxiv_folder(tmp_path / "c", records=400)
    first = load_competition(_params(folder, tmp_path, sample_per_class=30), tmp_path)
    assert first.data_info["cache_hit"] is False
    cached = Path(first.data_info["cache_file"])
    assert cached.is_file() and cached.is_relative_to(tmp_path / "outputs" / ".cache")
    data = tmp_path / "outputs" / ".cache" / "data"
    assert len(list(data.glob("test-*.json"))) == 1  # the rows' file, and its texts beside it
    assert len(list(data.glob("test-*.texts-*.arrow"))) == 1 and cached.suffix == ".arrow"
    hits = EVENTS["data hit"]
    again = load_competition(_params(folder, tmp_path, sample_per_class=30), tmp_path)
    assert again.data_info["cache_hit"] is True
    assert EVENTS["data hit"] == hits + 2  # train and test
    assert list(again.test_ids) == list(first.test_ids) == [f"t{i}" for i in range(5)]
    assert again.train_texts == first.train_texts and (again.y == first.y).all()
    assert list(again.train_ids) == list(first.train_ids)
    other = load_competition(_params(folder, tmp_path, sample_per_class=20), tmp_path)
    assert other.data_info["cache_hit"] is False and len(other.y) < len(first.y)
    train = folder / "train.jsonl"
    lines = train.read_text().splitlines(keepends=True)
    train.write_text("".join(lines[:-1]))  # the file changes (one record fewer)
    changed = load_competition(_params(folder, tmp_path, sample_per_class=30), tmp_path)
    assert changed.data_info["cache_hit"] is False
    assert changed.data_info["rows_read"] == 399


def test_malformed_and_truncated_records_are_named_by_line(tmp_path: Path):
    folder = arxiv_folder(tmp_path / "c", records=50)
    train = folder / "train.jsonl"
    lines = train.read_text().splitlines(keepends=True)
    lines[6] = '{"id": "broken", "title": \n'  # line 7: malformed
    lines[-1] = lines[-1][: len(lines[-1]) // 2]  # line 50: cut mid-record, no newline
    train.write_text("".join(lines))
    with pytest.raises(KitError, match=r"train.jsonl, line 7: not valid JSON.*skip_bad_records"):
        load_competition(_params(folder, tmp_path, cache="on"), tmp_path)
    comp = load_competition(_params(folder, tmp_path, skip_bad_records=True), tmp_path)
    info = comp.data_info
    assert info["bad_records"] == 2 and len(comp.y) == 48
    assert [line for line, _ in info["bad_lines"]] == [7, 50]
    assert "truncated last line" in info["bad_lines"][1][1]
    lines[6] = json.dumps({"id": "ok7", "title": "t", "abstract": "a",
                           "categories": "cs.AI"}) + "\n"  # only the cut last line remains
    train.write_text("".join(lines))
    with pytest.raises(KitError, match=r"line 50: the file ends in the middle of a record"):
        load_competition(_params(folder, tmp_path, cache="on"), tmp_path)


def test_gzipped_json_lines_stream_and_cache(tmp_path: Path):
    folder = arxiv_folder(tmp_path / "c", records=300, gz=True)
    params = _params(folder, tmp_path, train_file="train.jsonl.gz", cache="on")
    comp = load_competition(params, tmp_path)
    assert len(comp.y) == 300 and comp.data_info["records"] == 300
    assert load_competition(params, tmp_path).data_info["cache_hit"] is True


def test_max_rows_stops_the_pass_early(tmp_path: Path):
    folder = arxiv_folder(tmp_path / "c", records=300)
    comp = load_competition(_params(folder, tmp_path, max_rows=100, cache="on"), tmp_path)
    assert comp.data_info["rows_read"] == 100 and list(comp.train_ids[:2]) == ["r0", "r1"]


def test_csv_bad_lines_are_counted_by_line_when_skipping(tmp_path: Path):
    path = tmp_path / "t.csv"
    path.write_text("id,text,label\n1,good,a\n2,bad,a,extra\n3,fine,b\n")
    stats = StreamStats()
    rows = [row for chunk in iter_chunks(path, ["id", "text", "label"], stats, skip_bad=True)
            for row in chunk]
    assert rows == [["1", "good", "a"], ["3", "fine", "b"]]
    assert stats.bad == 1 and stats.bad_lines[0][0] == 3
    with pytest.raises(KitError, match="line 3"):
        list(iter_chunks(path, ["id", "text", "label"], StreamStats()))


def test_parquet_files_stream_in_batches(tmp_path: Path):
    path = tmp_path / "t.parquet"
    pd.DataFrame({"id": [1, 2, 3], "text": ["a", "b", "c"], "extra": [0, 0, 0]}).to_parquet(path)
    stats = StreamStats()
    rows = [row for chunk in iter_chunks(path, ["id", "text", "label"], stats) for row in chunk]
    assert rows == [[1, "a", None], [2, "b", None], [3, "c", None]] and stats.records == 3


def test_label_mapping_report_names_the_rule_and_the_ambiguous_codes():
    label_map = {"math-ph": "Physics", "math.": "Mathematics", "math": "Mathematics",
                 "cs.": "CS"}
    assert rule_for("math-ph", label_map) == ("Physics", "exact key 'math-ph'", True)
    assert rule_for("math.CO", label_map) == ("Mathematics", "prefix 'math.'", False)
    assert rule_for("hep-th", label_map) == (None, "unmapped", False)
    table = mapping_report({"math.CO": 5, "math-ph": 2, "hep-th": 1}, label_map)
    assert table["code"].tolist() == ["math.CO", "math-ph", "hep-th"]
    assert table["class"].tolist()[:2] == ["Mathematics", "Physics"]


def test_cache_dir_param_moves_the_cache(tmp_path: Path):
    folder = arxiv_folder(tmp_path / "c", records=100)
    comp = load_competition(_params(folder, tmp_path, cache="on",
                                    cache_dir=str(tmp_path / "elsewhere")), tmp_path)
    assert Path(comp.data_info["cache_file"]).parent == tmp_path / "elsewhere" / "data"
    assert os.listdir(tmp_path / "elsewhere" / "data")


def test_a_column_no_record_has_is_named_as_missing(tmp_path: Path):
    folder = arxiv_folder(tmp_path / "c", records=60)
    with pytest.raises(KitError, match=r"missing column\(s\) \['label'\]"):
        load_competition(_params(folder, tmp_path, cache="on", label_column="label"), tmp_path)


def test_reservoir_is_seeded_uniform_and_honours_max_rows():
    from kit.data.stream import Sampler

    labels = [("a", "b", "b", "c", "c", "c")[i % 6] for i in range(6000)]
    rows = [[i, label] for i, label in enumerate(labels)]

    def sample(seed: int, max_rows: int | None = None) -> list:
        sampler = Sampler(lambda cell: cell, 300, max_rows, seed)
        for start in range(0, len(rows), 1000):
            sampler.offer_chunk(rows[start:start + 1000], 1)
            if sampler.full:
                break
        return sampler.frame(["i", "label"])["i"].tolist()

    first = sample(0)
    assert first == sample(0) and first != sample(1) and first == sorted(first)
    assert Counter(labels[i] for i in first) == {"a": 300, "b": 300, "c": 300}
    assert sum(i >= 3000 for i in first) in range(370, 530)  # both halves of the file: uniform
    short = sample(0, max_rows=600)
    assert max(short) < 600 and Counter(labels[i] for i in short) == {"a": 100, "b": 200,
                                                                      "c": 300}
    keys = [labels[i] for i in stratified_sample(labels, 300, seed=0)]
    assert Counter(keys) == Counter(labels[i] for i in first)


def test_a_streamed_csv_that_is_not_utf8_is_read_in_the_detected_encoding(tmp_path: Path):
    path = tmp_path / "t.csv"
    path.write_bytes("id,text,label\n1,café crème,a\n2,naïve,b\n".encode("cp1252"))
    stats = StreamStats()
    rows = [row for chunk in iter_chunks(path, ["id", "text"], stats) for row in chunk]
    assert [r[1] for r in rows] == ["café crème", "naïve"]


def _text_folder(folder: Path) -> Path:
    """A CSV competition with missing cells, quotes, newlines, accents and rows without text."""
    topics = {"sport": "the team won, \"late\"\nin the final", "food": "soup with salt — café",
              "tech": "code compiles faster"}
    rows = [{"id": i + 1, "title": f"{label} {i}" if i % 5 else None,
             "body": f"{sentence} item{i}" if i % 7 else None, "label": label}
            for i, (label, sentence) in enumerate(list(topics.items()) * 30)]
    rows[10]["title"] = rows[10]["body"] = None  # no text: dropped from train, with a warning
    rows[20]["title"], rows[20]["body"] = "   ", None
    train = pd.DataFrame(rows)
    test = pd.DataFrame({"id": range(1000, 1012), "title": ["t"] * 11 + [None],
                         "body": [f"body {i}" for i in range(11)] + [None]})
    folder.mkdir(parents=True)
    train.to_csv(folder / "train.csv", index=False)
    test.to_csv(folder / "test.csv", index=False)
    pd.DataFrame({"id": test["id"], "label": "food"}).to_csv(folder / "sample_submission.csv",
                                                             index=False)
    return folder


def test_streamed_arrow_texts_are_the_plain_reads_texts_in_the_same_order(tmp_path: Path):
    from kit.data.arrow_rows import TextColumn
    from kit.data.folds import assign_folds
    from kit.data.split import make_split
    from kit.models.tfidf import fit_predict_tfidf

    folder = _text_folder(tmp_path / "c")

    def load(cache: str):
        params = params_from_dict({"competition": {
            "slug": "t", "data_dir": str(folder), "answer_key_file": None, "cache": cache,
            "text_columns": ["title", "body"], "text_template": "{title}: {body}"},
            "output_dir": str(tmp_path / "outputs")})
        return params, load_competition(params, tmp_path)

    params, plain = load("off")
    _, streamed = load("on")
    _, again = load("on")  # the cache hit maps the rows and the rendered texts
    assert isinstance(plain.train_texts, list) and isinstance(streamed.train_texts, TextColumn)
    assert again.data_info["cache_hit"] and isinstance(again.test_texts, TextColumn)
    assert len(plain.train_texts) == 85  # rows 0, 10, 20, 35, 70 have no text: dropped
    for comp in (streamed, again):
        assert list(comp.train_texts) == plain.train_texts
        assert list(comp.test_texts) == plain.test_texts and comp.test_texts[-1] == ": "
        assert (comp.y == plain.y).all() and comp.labels == plain.labels
        assert list(comp.train_ids) == list(plain.train_ids)
        assert list(comp.test_ids) == list(plain.test_ids)
        assert (assign_folds(comp, 3, 7) == assign_folds(plain, 3, 7)).all()
        for a, b in zip(make_split(comp, 0.2, 7), make_split(plain, 0.2, 7), strict=True):
            assert (a == b).all()
    probs = [fit_predict_tfidf(c.train_texts, c.y, [c.test_texts], params.tfidf, c.task,
                               len(c.labels), 0)[0] for c in (plain, streamed)]
    np.testing.assert_array_equal(probs[0], probs[1])


def test_text_column_indexes_slices_takes_and_streams_across_batches(tmp_path: Path):
    import pyarrow as pa

    from kit.data.arrow_rows import ArrowRows, TextColumn, write_arrow_file

    texts = [f"text {i} é" for i in range(23)]
    schema = pa.schema([("text", pa.string())])
    path = tmp_path / "t.arrow"
    write_arrow_file(path, schema, ({"text": texts[i : i + 7]} for i in range(0, 23, 7)))
    column = TextColumn(ArrowRows(path))
    assert len(column) == 23 and column[0] == texts[0] and column[-1] == texts[-1]
    assert column[3:17:4] == texts[3:17:4] and column == texts and column != texts[:-1]
    assert list(column.iter_batches(5)) == [texts[i : i + 5] for i in range(0, 23, 5)]
    order = [22, 0, 7, 7, 13, -1]
    assert column.take(order) == [texts[i] for i in order]
    keep = np.array([1, 6, 7, 8, 20, 22])  # rows across three record batches
    picked = TextColumn(column.rows, positions=keep)
    assert list(picked) == [texts[i] for i in keep] and picked[2] == texts[7]
    assert picked.take([5, 0]) == [texts[22], texts[1]]
    with pytest.raises(IndexError):
        _ = picked[6]


def _rss_file_kb() -> int:
    """Resident pages of mapped files (kB): what reading through a memory map adds."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    pytest.skip("no RssFile in /proc/self/status (not Linux)")


def test_a_pass_over_all_texts_reads_batches_not_the_memory_map(tmp_path: Path):
    """The bound at a million rows: a whole pass (iteration, take, tokenising) must not leave
    the file's pages resident, as reading through the map does (the control below)."""
    import pyarrow as pa

    from kit.data.arrow_rows import ArrowRows, TextColumn, write_arrow_file

    block = "x" * 1000
    path = tmp_path / "texts.arrow"
    write_arrow_file(path, pa.schema([("text", pa.string())]),
                     ({"text": [f"{k} {block}"] * 10_000} for k in range(4)))  # 40 MB
    column = TextColumn(ArrowRows(path))
    before = _rss_file_kb()
    assert sum(len(t) for t in column) == 40_000 * 1002
    assert len(column.take(np.arange(0, 40_000, 3))) == 13_334
    streamed = _rss_file_kb() - before
    assert len(column[:]) == 40_000  # a slice reads through the map
    mapped = _rss_file_kb() - before
    assert streamed < 8_000 and mapped > 30_000, (streamed, mapped)


def test_pickled_text_column_carries_the_path_not_the_rows(tmp_path: Path):
    import pickle

    import pyarrow as pa

    from kit.data.arrow_rows import ArrowRows, TextColumn, write_arrow_file

    path = tmp_path / "t.arrow"
    write_arrow_file(path, pa.schema([("text", pa.string())]), [{"text": ["a" * 1000] * 500}])
    column = TextColumn(ArrowRows(path), positions=np.arange(0, 500, 2))
    assert column[0] == "a" * 1000  # mapped now
    blob = pickle.dumps(column)
    assert len(blob) < 10_000 and pickle.loads(blob) == list(column)
