"""Offline demo competitions: real packaged data in Kaggle's layout, the same on every machine."""

from pathlib import Path

import pandas as pd
import pytest

from kit.data.demos import DEMOS, build_demo


@pytest.mark.parametrize("slug", list(DEMOS))
def test_demo_is_kaggle_shaped_and_deterministic(tmp_path: Path, slug: str):
    folder = build_demo(slug, tmp_path / "a")
    again = build_demo(slug, tmp_path / "b")
    for name in ("train.csv", "test.csv", "sample_submission.csv", "answer_key.csv"):
        assert (folder / name).read_bytes() == (again / name).read_bytes(), name
    train, test = pd.read_csv(folder / "train.csv"), pd.read_csv(folder / "test.csv")
    sample = pd.read_csv(folder / "sample_submission.csv")
    key = pd.read_csv(folder / "answer_key.csv")
    label = DEMOS[slug].label_column
    assert label in train and label not in test
    assert sample["id"].tolist() == test["id"].tolist() == key["id"].tolist()
    assert set(key["Usage"]) == {"Public", "Private"}
    assert not set(train["id"]) & set(test["id"])
    if DEMOS[slug].group_column:
        group = DEMOS[slug].group_column
        assert not set(train[group]) & set(test[group])


def test_sizes_match_the_sources(tmp_path: Path):
    sizes = {slug: sum(len(pd.read_csv(build_demo(slug, tmp_path) / f)) for f in
                       ("train.csv", "test.csv")) for slug in DEMOS}
    assert sizes["champ-math-topic"] == 270 and sizes["champ-math-correctness"] == 540
    assert 5300 < sizes["trec-questions"] < 5400
    assert 4700 < sizes["sms-spam"] <= 4837
