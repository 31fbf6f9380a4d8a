"""params/arxiv-domains.yaml end to end on a generated arXiv-shaped file, through the streamed
path: per-class sample in one pass, Parquet and token caches, label-mapping report, a submission."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from kit.config.params import load_params
from kit.core.rundir import open_run
from kit.data.competition import load_competition
from kit.steps.decide import fit_decision_rule
from kit.steps.eda import run_eda
from kit.steps.submit import make_submission
from kit.steps.train import train_models
from tests.conftest import REPO
from tests.helpers.arxiv_shaped import write_arxiv_jsonl
from tests.helpers.tiny_recipes import build_tiny_model

PER_CLASS = 40


def _arxiv_data(folder: Path, records: int) -> Path:
    folder.mkdir(parents=True)
    train = folder / "arxiv-metadata-oai-snapshot.json"
    write_arxiv_jsonl(train, records=records, seed=7)
    rows = [json.loads(line) for line in train.open()]
    with open(train, "w") as f:  # unique ids (the generator's repeat past 100k records)
        for i, rec in enumerate(rows):
            f.write(json.dumps(rec | {"id": f"{2101 + i // 90000}.{i % 90000:05d}"}) + "\n")
    test_ids = [f"2401.{i:05d}0" for i in range(12)]  # trailing zeros: ids kept as written
    with open(folder / "test.jsonl", "w") as f:
        for arxiv_id, rec in zip(test_ids, rows[:12], strict=True):
            f.write(json.dumps({"id": arxiv_id, "title": rec["title"],
                                "abstract": rec["abstract"]}) + "\n")
    pd.DataFrame({"id": test_ids, "categories": "Physics"}).to_csv(
        folder / "sample_submission.csv", index=False)
    return folder


def test_arxiv_domains_recipe_streams_samples_caches_and_submits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("COMPKIT_ROOT", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "params").symlink_to(REPO / "params")
    folder = _arxiv_data(tmp_path / "data" / "arxiv", records=2500)
    shipped = load_params(REPO / "params" / "arxiv-domains.yaml")
    model = build_tiny_model(shipped.transformer.model, tmp_path / "tiny-bert")
    overrides = {"competition.data_dir": str(folder), "competition.sample_per_class": PER_CLASS,
                 "transformer.model": str(model), "transformer.max_steps": 2,
                 "transformer.eval_steps": 2, "transformer.save_steps": 2,
                 "transformer.batch_size": 4, "transformer.max_length": 64,
                 "tfidf.max_features": 5000}
    run = open_run("params/arxiv-domains.yaml", overrides=overrides)
    comp = load_competition(run.params)
    info = comp.data_info
    assert info["rows_read"] == 2500 and info["cache_hit"] is False
    per_class = pd.Series(comp.y).value_counts()
    assert per_class.max() == PER_CLASS and len(comp.labels) == 7  # the seven domains
    assert all(n == min(PER_CLASS, info["class_rows_read"][comp.labels[k]])
               for k, n in per_class.items())

    eda = run_eda(run, comp)
    table = eda.label_mapping.set_index("code")
    assert table["rows"].sum() == 2500  # every record's primary code, not just the sample
    assert table.loc["math-ph", "rule"] == "exact key 'math-ph'"
    assert table.loc["math.CO", "rule"] == "prefix 'math.'"
    assert table.loc["alg-geom", "class"] == "Mathematics"  # a pre-2007 code, mapped
    assert table["class"].notna().all()
    summary = run.read_metrics()["eda"]["label_mapping"]
    assert summary["unmapped_rows"] == 0 and summary["mapped_rows"] == 2500

    train_models(run, comp)
    fit_decision_rule(run, comp)
    result = make_submission(run, comp)
    sub = pd.read_csv(result.file, dtype=str)
    assert sub["id"].tolist() == comp.test_ids.tolist() and sub["id"].iloc[0].endswith("0")
    assert set(sub["categories"]) <= set(comp.labels)
    tokens = list((tmp_path / "outputs" / ".cache" / "tokens").glob("*.arrow"))
    assert len(tokens) >= 2  # train and validation texts (+ test at prediction)
    resources = json.loads((run.path / "env.json").read_text())["resources"]
    assert {"eda", "train", "decide", "submit"} <= set(resources)
    assert resources["train"]["cache"]["tokens miss"] >= 2

    again = load_competition(run.params)  # the next notebook: the cache, not the file
    assert again.data_info["cache_hit"] is True and again.train_texts == comp.train_texts
