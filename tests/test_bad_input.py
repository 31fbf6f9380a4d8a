"""Bad input, as a new user meets it on Kaggle-shaped data: one clear error, or handled with a log.

Each test builds the spoilt files on the spot and loads them as a run would.
"""

from __future__ import annotations

from pathlib import Path

from kit.core.rundir import open_run
from kit.data.competition import load_competition
from kit.steps.train import train_models


def test_tfidf_trains_on_the_split(project: Path):
    run = open_run("params/topics.yaml", overrides={"models": ["tfidf"]})
    table = train_models(run, load_competition(run.params, project))
    assert "tfidf" in table.index and (run.path / "split.json").exists()
