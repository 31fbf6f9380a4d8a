"""kit.submission.store: numbered, never-overwritten, atomic submission files and the log."""

from __future__ import annotations

import hashlib
import os

import pandas as pd
import pytest

from kit.errors import KitError
from kit.submission import store as submission_store
from kit.submission.store import LOG_COLUMNS, log_submission, read_log, save_submission


def _preds(labels: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"id": range(1, len(labels) + 1), "label": labels})


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp"))


def test_each_save_gets_the_next_number_and_latest_is_submission_csv(tmp_path):
    run = tmp_path / "run-1"
    first = save_submission(_preds(["spam", "ham"]), run)
    second = save_submission(_preds(["ham", "ham"]), run)
    third = save_submission(_preds(["ham", "spam"]), run)

    assert [p.name for p in (first, second, third)] == [
        "submission_001.csv", "submission_002.csv", "submission_003.csv"]
    assert first.parent == run / "submissions"
    assert pd.read_csv(first)["label"].tolist() == ["spam", "ham"]  # never overwritten
    assert pd.read_csv(second)["label"].tolist() == ["ham", "ham"]
    assert (run / "submission.csv").read_bytes() == third.read_bytes()
    assert pd.read_csv(run / "submission.csv").columns.tolist() == ["id", "label"]  # no index
    assert _leftovers(run) == []


def test_numbering_continues_after_gaps_and_never_reuses_a_name(tmp_path):
    run = tmp_path / "run"
    (run / "submissions").mkdir(parents=True)
    (run / "submissions" / "submission_007.csv").write_text("kept\n")
    (run / "submissions" / "notes.txt").write_text("not a submission\n")
    path = save_submission(_preds(["a"]), run)
    assert path.name == "submission_008.csv"
    assert (run / "submissions" / "submission_007.csv").read_text() == "kept\n"


def test_a_number_taken_meanwhile_is_skipped_not_overwritten(tmp_path, monkeypatch):
    """Another writer creates _001 between our scan and our write: we move to _002."""
    run = tmp_path / "run"
    (run / "submissions").mkdir(parents=True)
    real_write_temp = submission_store.write_temp
    raced = []

    def write_temp_with_race(folder, name, data):
        if name == "submission_001.csv" and not raced:
            raced.append(name)
            (folder / name).write_text("other writer\n")
        return real_write_temp(folder, name, data)

    monkeypatch.setattr(submission_store, "write_temp", write_temp_with_race)
    path = save_submission(_preds(["x"]), run)
    assert path.name == "submission_002.csv"
    assert (run / "submissions" / "submission_001.csv").read_text() == "other writer\n"
    assert _leftovers(run) == []


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_failure_mid_write_leaves_old_files_intact_and_no_partial_file(tmp_path, monkeypatch,
                                                                      failing):
    run = tmp_path / "run"
    first = save_submission(_preds(["spam", "ham"]), run)
    latest_before = (run / "submission.csv").read_bytes()
    real = getattr(os, failing)

    def crash(*args, **kwargs):
        raise OSError(f"simulated crash in os.{failing}")

    if failing == "replace":  # let the numbered copy through, crash on submission.csv
        monkeypatch.setattr(os, "replace", crash)
    else:
        calls = []

        def crash_on_second(*args, **kwargs):
            calls.append(1)
            return crash() if len(calls) > 1 else real(*args, **kwargs)

        monkeypatch.setattr(os, "fsync", crash_on_second)

    with pytest.raises(OSError, match="simulated crash"):
        save_submission(_preds(["ham", "ham"]), run)
    monkeypatch.undo()

    assert (run / "submission.csv").read_bytes() == latest_before
    assert pd.read_csv(first)["label"].tolist() == ["spam", "ham"]
    assert _leftovers(run) == []
    # Whatever numbered copy exists is complete, never half-written.
    for path in (run / "submissions").iterdir():
        assert len(pd.read_csv(path)) == 2


def test_save_refuses_something_that_is_not_a_dataframe(tmp_path):
    with pytest.raises(KitError, match="DataFrame"):
        save_submission([("id", "label")], tmp_path)


def _log(path, file, **overrides):
    args = dict(run="run-3", file=file, message="deberta fold0", model="deberta-v3-small",
                local_public=0.81, local_private=None, validation=0.79,
                kaggle_answer="Successfully submitted to X", ok=True, dry_run=False)
    args.update(overrides)
    return log_submission(path, **args)


def test_log_rows_have_sha256_scores_and_one_header(tmp_path):
    sub = save_submission(_preds(["spam", "ham"]), tmp_path / "run-3")
    log_path = tmp_path / "outputs" / "submissions.csv"

    row = _log(log_path, sub)
    _log(log_path, sub, dry_run=True, ok=True, kaggle_answer="dry run: not sent",
         local_public=None)

    assert row["sha256"] == hashlib.sha256(sub.read_bytes()).hexdigest()
    text = log_path.read_text()
    assert text.count("time_utc") == 1
    df = read_log(log_path)
    assert df.columns.tolist() == LOG_COLUMNS and len(df) == 2
    assert df["sha256"].tolist() == [row["sha256"]] * 2
    assert df["local_public"].iloc[0] == pytest.approx(0.81)
    assert pd.isna(df["local_private"].iloc[0]) and pd.isna(df["local_public"].iloc[1])
    assert df["dry_run"].tolist() == [False, True]
    assert df["ok"].tolist() == [True, True]
    assert df["time_utc"].iloc[0].endswith("+00:00")
    assert df["model"].iloc[0] == "deberta-v3-small"


def test_log_cuts_secrets_and_keeps_answers_on_one_line(tmp_path, monkeypatch):
    token = "tok-77c1d0e2a9b84f3b"
    kgat = "KGAT_" + "abc123def"  # built at run time: no token-shaped literal in the repo
    monkeypatch.setenv("KAGGLE_API_TOKEN", token)
    log_path = tmp_path / "submissions.csv"
    _log(log_path, tmp_path / "missing.csv", message=f"oops {token}",
         kaggle_answer=f"failed for {kgat}\nsecond line {token}", ok=False)
    text = log_path.read_text()
    assert token not in text and kgat not in text
    df = read_log(log_path)
    assert df["kaggle_answer"].iloc[0] == "failed for [hidden] second line [hidden]"
    assert df["sha256"].iloc[0] == ""  # not a local file: a code-competition submission


def test_log_refuses_a_foreign_csv(tmp_path):
    log_path = tmp_path / "submissions.csv"
    log_path.write_text("id,label\n1,spam\n")
    with pytest.raises(KitError, match="not the submission log"):
        _log(log_path, tmp_path / "x.csv")
    assert log_path.read_text() == "id,label\n1,spam\n"


def test_read_log_of_nothing_is_empty_with_columns(tmp_path):
    df = read_log(tmp_path / "none.csv")
    assert df.empty and df.columns.tolist() == LOG_COLUMNS
