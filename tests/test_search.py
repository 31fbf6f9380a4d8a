"""Search over params keys (grid, Optuna TPE): trials as runs, a killed search resumes, pruning;
the leaderboard of runs; the competing commands of `python -m kit`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, write_params
from helpers.kill import kill_when_stopped

from kit.cli import main as kit_main
from kit.ensemble.fit import read_ensemble
from kit.errors import KitError
from kit.search.study import run_search
from kit.tracking.leaderboard import build_leaderboard, plot_leaderboard

optuna = pytest.importorskip("optuna")


def _search_params(project: Path, name: str, search: dict, **extra) -> str:
    write_params(project / "params" / f"{name}.yaml", {
        "extends": "topics.yaml", "name": name, "search": search, **extra})
    return f"params/{name}.yaml"


def test_grid_2x2_on_a_tiny_transformer(project: Path, tiny_model: Path, one_thread):
    params = _search_params(project, "grid", {
        "method": "grid", "prune": False,
        "grid": {"transformer.lr": [2e-2, 1e-4], "transformer.epochs": [1.0, 2.0]}},
        models=["transformer"],
        transformer={"model": str(tiny_model), "max_length": 32, "batch_size": 8,
                     "eval_steps": 4, "save_steps": 8, "save_total_limit": 1})
    result = run_search(params, root=project)
    table = result.table
    assert len(table) == 4 and (table["state"] == "COMPLETE").all()
    points = {(r["param:transformer.lr"], r["param:transformer.epochs"]) for _, r in
              table.iterrows()}
    assert points == {(2e-2, 1.0), (2e-2, 2.0), (1e-4, 1.0), (1e-4, 2.0)}
    for _, row in table.iterrows():  # each trial is a run with its values in params.yaml
        stored = (project / "outputs" / row["run"] / "params.yaml").read_text()
        assert f"lr: {row['param:transformer.lr']}" in stored
        metrics = json.loads((project / "outputs" / row["run"] / "metrics.json").read_text())
        assert metrics["validation"] == pytest.approx(row["value"])
    assert result.best_value == table["value"].max()
    assert (result.folder / "study.db").exists() and (result.folder / "trials.csv").exists()
    again = run_search(params, root=project)  # complete: nothing runs again
    assert len(again.table) == 4


def test_killed_search_resumes_without_rerunning_finished_trials(project: Path):
    params = _search_params(project, "grid-kill", {
        "method": "grid", "grid": {"tfidf.C": [1.0, 4.0], "tfidf.word_ngram_max": [1, 2]}})
    log = project / "trained.log"
    worker = [sys.executable, str(REPO / "tests" / "search_worker.py"), str(project), params,
              str(log)]
    proc = subprocess.Popen([*worker, "grid-kill-t002"], cwd=project)
    kill_when_stopped(proc)
    assert log.read_text().split() == ["grid-kill-t000", "grid-kill-t001", "grid-kill-t002"]
    subprocess.run(worker, cwd=project, check=True)
    trained = log.read_text().split()
    # t000 and t001 finished before the kill and are not trained again; the killed trial runs
    # again in its own run folder; one trial is left to run.
    assert trained[3:] == ["grid-kill-t002", "grid-kill-t004"]
    table = pd.read_csv(project / "outputs" / "grid-kill-search" / "trials.csv")
    assert (table["state"] == "COMPLETE").sum() == 4 and (table["state"] == "FAIL").sum() == 1
    done = table[table["state"] == "COMPLETE"]
    assert len({(r["param:tfidf.C"], r["param:tfidf.word_ngram_max"])
                for _, r in done.iterrows()}) == 4  # every grid point once


def test_tpe_prunes_bad_folds_and_records_ranges(project: Path):
    params = _search_params(project, "tpe", {
        "method": "tpe", "trials": 6, "prune": True,
        "ranges": {"tfidf.C": [1.0e-4, 10.0]}, "log_scale": ["tfidf.C"]},
        cv={"folds": 3})
    result = run_search(params, root=project)
    values = result.table["param:tfidf.C"]
    assert len(result.table) == 6 and values.between(1e-4, 10.0).all()
    assert result.table["state"].isin(["COMPLETE", "PRUNED"]).all()


def test_search_refuses_a_space_that_makes_bad_params(project: Path):
    params = _search_params(project, "bad", {"grid": {"cv.folds": [0, 3]}})
    with pytest.raises(KitError, match=r"search point .*cv.folds is 0"):
        run_search(params, root=project)
    params = _search_params(project, "empty", {"method": "grid"})
    with pytest.raises(KitError, match="nothing to search"):
        run_search(params, root=project)


def test_leaderboard_lists_runs_with_the_params_that_differ(project: Path, capsys):
    for name, char in (("lb-a", True), ("lb-b", False)):
        assert kit_main(["train", "params/topics.yaml", "--name", name,
                         "--set", f"tfidf.char_ngrams={str(char).lower()}",
                         "--set", "cv.folds=3"]) == 0
    assert kit_main(["leaderboard", "--outputs", str(project / "outputs")]) == 0
    table = pd.read_csv(project / "outputs" / "leaderboard.csv")
    assert set(table["run"]) == {"lb-a", "lb-b"}
    assert "tfidf.char_ngrams" in table.columns and "seed" not in table.columns
    assert table["cv_std"].notna().all() and (table["folds"] == 3).all()
    assert (table["peak_rss_gb"] > 0.05).all()  # env.json: the train step's peak memory
    assert table["cv_score"].is_monotonic_decreasing
    assert (project / "outputs" / "leaderboard.png").stat().st_size > 1000
    fig = plot_leaderboard(build_leaderboard(project / "outputs"))
    assert len(fig.axes[0].patches) == 2


def test_ensemble_command_blends_runs_decides_and_submits(project: Path, capsys):
    for name, words in (("e-a", 2), ("e-b", 1)):
        kit_main(["train", "params/topics.yaml", "--name", name, "--set", "cv.folds=3",
                  "--set", f"tfidf.word_ngram_max={words}", "--set", "tfidf.char_ngrams=false"])
    assert kit_main(["ensemble", "params/topics.yaml", "--name", "blend",
                     "--runs", "e-a", "e-b", "--rank"]) == 0
    out = capsys.readouterr().out
    assert "rule:" in out and "local scores:" in out
    run = project / "outputs" / "blend"
    info = read_ensemble(run)
    assert set(info["weights"]) == {"e-a/tfidf", "e-b/tfidf"} and info["rank"] is True
    assert (run / "FINISHED").exists() and (run / "submission.csv").exists()
    # A recipe file with a student and pseudo-labels (as params/demo-win.yaml) blends its runs
    # too, and by stacking: the command trains nothing, so those sections do not apply.
    (project / "params" / "topics-win.yaml").write_text(
        "extends: topics.yaml\nmodels: [tfidf, student]\ncv: {folds: 3}\n"
        "distill: {teacher: tfidf}\npseudo: {enabled: true}\n")
    assert kit_main(["ensemble", "params/topics-win.yaml", "--name", "stacked",
                     "--runs", "e-a", "e-b", "--method", "stack"]) == 0
    scores = json.loads((project / "outputs" / "stacked" / "metrics.json").read_text())
    assert any(key.startswith("stack_") for key in scores["models"]["ensemble"]), scores


def test_folds_command_prints_rows_per_class(project: Path, capsys):
    assert kit_main(["folds", "params/topics.yaml", "--name", "f", "--set", "cv.folds=4"]) == 0
    out = capsys.readouterr().out
    assert "r0_f3" in out and "sport" in out
    assert kit_main(["train", "params/topics.yaml", "--set", "cv.folds"]) == 2


def test_leaderboard_compares_params_within_a_competition(project: Path):
    for name, params, extra in (("t-a", "params/topics.yaml", "tfidf.min_df=1"),
                                ("t-b", "params/topics.yaml", "tfidf.min_df=2"),
                                ("s-a", "params/sport.yaml", "tfidf.min_df=1")):
        assert kit_main(["train", params, "--name", name, "--set", extra,
                         "--set", "cv.folds=3", "--set", "ensemble.enabled=true"]) == 0
    table = build_leaderboard(project / "outputs")
    assert "tfidf.min_df" in table.columns  # differs between the two topics runs
    assert "competition.task" not in table.columns  # differs only across competitions
    assert not any(c.startswith("competition.label_map.") for c in table.columns)
    ensemble_rows = table[table["model"] == "ensemble"]
    assert ensemble_rows["cv_std"].notna().all() and (ensemble_rows["folds"] == 3).all()
