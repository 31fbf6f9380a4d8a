"""The leaderboard per competition (its metric named), and Kaggle's scores joined to the runs.

Runs are written as the notebooks leave them (params.yaml from open_run, metrics.json); the
submissions go through the real kaggle CLI to the stand-in Kaggle API (tests/conftest.py), and
`kit leaderboard --kaggle` reads them back with `kaggle competitions submissions --csv`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from kit.cli import main as kit_main
from kit.core.rundir import open_run
from kit.errors import KitError
from kit.kaggle import cli as kaggle_cli
from kit.kaggle.scores import read_submissions_csv
from kit.steps.leaderboard import leaderboard
from kit.submission.store import log_submission, sha256_of

TOKEN = "tok-5e4d3c2b1a0f9e8d7c6b"


def scored_run(params: str, name: str, metric: str, score: float) -> Path:
    """A run folder with a chosen model and its CV score, as 02/03 leave it."""
    run = open_run(params, name)
    run.update_metrics(metric=metric, best_model="tfidf", models={"tfidf": {metric: score}})
    return run.path


@pytest.fixture
def runs(project: Path) -> dict[str, Path]:
    return {"topics-a": scored_run("params/topics.yaml", "topics-a", "f1_micro", 0.90),
            "topics-b": scored_run("params/topics.yaml", "topics-b", "f1_micro", 0.95),
            "sport-a": scored_run("params/sport.yaml", "sport-a", "f1", 0.80)}


def test_the_notebook_leaderboard_shows_only_its_competition(project, runs, capsys):
    board = leaderboard(open_run("params/topics.yaml", "topics-a"))
    assert list(board.table["run"]) == ["topics-b", "topics-a"]  # best first, no sport run
    assert (board.competition, board.metric) == ("topics", "f1_micro")
    assert board.plot.axes[0].get_title() == "Runs of topics, scored by f1_micro"
    every = pd.read_csv(project / "outputs" / "leaderboard.csv")
    assert set(every["run"]) == set(runs)  # the file keeps every competition's runs

    assert kit_main(["leaderboard", "--outputs", "outputs"]) == 0
    printed = capsys.readouterr().out
    assert "topics (metric f1_micro, 2 runs):" in printed and "sport (metric f1, 1 run):" in printed
    for name in ("leaderboard.png", "leaderboard_topics.png", "leaderboard_sport.png"):
        assert (project / "outputs" / name).stat().st_size > 1000
    assert kit_main(["leaderboard", "--outputs", "outputs", "--competition", "sport"]) == 0
    printed = capsys.readouterr().out
    assert "sport (metric f1" in printed and "topics" not in printed
    with pytest.raises(KitError, match="one of: sport, topics"):
        from kit.tracking.leaderboard import build_leaderboard, by_competition

        by_competition(build_leaderboard(project / "outputs"), "titanic")


def test_the_clis_submission_csv_is_read_with_its_status_names():
    # The exact shape `print_csv` writes for ApiSubmission rows (kaggle 2.2.4).
    said = ("ref,fileName,date,description,status,publicScore,privateScore\n"
            "51,submission_002.csv,2026-12-05 04:00:00,\"run b, tfidf\",SubmissionStatus.ERROR,"
            "None,None\n"
            "50,submission_001.csv,2026-12-04 03:00:00,run a,SubmissionStatus.COMPLETE,0.912,\n")
    table = read_submissions_csv("Warning: a newer version of the CLI exists\n" + said)
    assert list(table["status"]) == ["ERROR", "COMPLETE"]
    assert table["publicScore"].isna().iloc[0] and table["publicScore"].iloc[1] == 0.912
    assert table["description"].iloc[0] == "run b, tfidf"
    assert read_submissions_csv("No submissions found").empty


@pytest.fixture
def kaggle_env(standin, tmp_path, monkeypatch) -> dict[str, str]:
    """The stand-in (fresh); this process's environment pointed at it (kit_main reads it)."""
    for name in list(os.environ):
        if name.startswith(("KAGGLE_", "COLAB_")):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "NO_PROXY": "localhost,127.0.0.1",
           "KAGGLE_API_ENVIRONMENT": "LOCALHOST", "KAGGLE_API_TOKEN": TOKEN}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def submit_as_04_does(run: Path, message: str) -> Path:
    """Send a file with the kaggle CLI and log it as 04_submit does (kit.steps.submit)."""
    folder = run / "submissions"
    folder.mkdir(exist_ok=True)
    path = folder / f"submission_{len(list(folder.iterdir())) + 1:03d}.csv"
    path.write_text(f"id,label\n1,{run.name}\n")
    answer = kaggle_cli.submit("topics", path, message, dry_run=False)
    log_submission(run.parent / "submissions.csv", run=run.name, file=path, message=message,
                   model="tfidf", local_public=None, local_private=None, validation=None,
                   kaggle_answer=answer.answer, ok=answer.ok, dry_run=False)
    return path


def test_leaderboard_kaggle_joins_kaggles_scores_to_the_runs(project, runs, standin, kaggle_env,
                                                             capsys):
    state = standin.state
    state.public_scores["topics"] = ["0.931", "0.944", "0.902"]
    sent_a = submit_as_04_does(runs["topics-a"], "topics-a tfidf val f1_micro=0.9000")
    sent_b = submit_as_04_does(runs["topics-b"], "baseline")  # names no run: the log joins it
    # Sent from a Kaggle notebook (not in this machine's log): the message names the run.
    kaggle_cli.submit("topics", sent_b, "topics-a rerun on Kaggle", dry_run=False)

    assert kit_main(["leaderboard", "--outputs", "outputs", "--kaggle"]) == 0
    printed = capsys.readouterr().out
    assert "ListSubmissions" in " ".join(state.endpoints())
    table = pd.read_csv(project / "outputs" / "leaderboard.csv").set_index("run")
    assert table.loc["topics-a", "kaggle_public"] == 0.902  # its latest scored submission
    assert table.loc["topics-a", "kaggle_submissions"] == 2
    assert table.loc["topics-b", "kaggle_public"] == 0.944
    assert table.loc["topics-b", "kaggle_status"] == "COMPLETE"
    assert pd.isna(table.loc["sport-a", "kaggle_public"])  # no submissions to sport
    joined = pd.read_csv(project / "outputs" / "kaggle_submissions.csv").set_index("description")
    assert joined.loc["baseline", "run"] == "topics-b"
    assert joined.loc["baseline", "sha256"] == sha256_of(sent_b)
    assert joined.loc["topics-a tfidf val f1_micro=0.9000", "sha256"] == sha256_of(sent_a)
    assert joined.loc["topics-a rerun on Kaggle", "joined_by"] == "message"
    assert "kaggle_public" in printed and "topics (metric f1_micro, 2 runs):" in printed
    assert TOKEN not in printed


def test_the_notebook_leaderboard_before_any_run_has_scores(project):
    board = leaderboard(open_run("params/topics.yaml", "fresh"))
    assert board.table.empty and board.plot is None
