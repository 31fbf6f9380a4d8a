"""Kaggle's own scores for the leaderboard: each submission Kaggle lists, joined to its run.

`kaggle competitions submissions <slug> --csv` prints the columns of the CLI's
`submission_fields` (kaggle/api/kaggle_api_extended.py, kaggle 2.2.4): ref, fileName, date,
description, status, publicScore, privateScore; `status` is kagglesdk's SubmissionStatus printed
with `str()` ("SubmissionStatus.COMPLETE"; PENDING, COMPLETE, ERROR); the CLI lists the newest
20 (its default page size). Kaggle keeps no hash of the file, so each row is joined through the
kit's submission log (outputs/submissions.csv, kit.submission.store): the attempts sent with
that message and that file name give the run and the sha256 of the exact bytes (when several
runs sent the same message, the attempt closest in time). A row the log does not know (sent
from elsewhere) is joined by its message, which names the run (04_submit's default message
starts with the run name).
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from kit.errors import KitError

log = logging.getLogger(__name__)

SUBMISSIONS_FILE = "kaggle_submissions.csv"  # in outputs/: every Kaggle row, joined
COLUMNS = ["ref", "fileName", "date", "description", "status", "publicScore", "privateScore"]


def read_submissions_csv(output: str) -> pd.DataFrame:
    """The CLI's `--csv` answer as a table (empty when it says "No submissions found")."""
    lines = output.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith("ref,fileName,")), None)
    if start is None:
        if "No submissions found" in output:
            return pd.DataFrame(columns=COLUMNS)
        raise KitError(f"`kaggle competitions submissions --csv` answered {output[-300:]!r}, "
                       f"not a CSV with the columns {', '.join(COLUMNS)}. Fix: `pip install "
                       "'kaggle>=2.2.4'` and try again.")
    table = pd.read_csv(io.StringIO("\n".join(lines[start:])), dtype=str, keep_default_na=False)
    table["status"] = table["status"].str.replace("SubmissionStatus.", "", regex=False)
    for column in ("publicScore", "privateScore"):
        table[column] = pd.to_numeric(table[column].replace({"": None, "None": None}),
                                      errors="coerce")
    table["date"] = pd.to_datetime(table["date"], errors="coerce", utc=True)
    return table


def fetch_submissions(slug: str, env: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Kaggle's list of this account's submissions to competition `slug`."""
    from kit.kaggle.commands import run_kaggle

    page = f"https://www.kaggle.com/competitions/{slug}/submissions"
    run = run_kaggle(["competitions", "submissions", slug, "--csv"],
                     f"submission list of {slug}", page, env=env)
    return read_submissions_csv(run.output)


def _named_run(message: str, runs: list[str]) -> str | None:
    """The run a message names: the longest run name that is one of its words."""
    words = set(re.split(r"\s+", message.strip()))
    named = [r for r in runs if r in words]
    return max(named, key=len) if named else None


def join_runs(kaggle: pd.DataFrame, submission_log: pd.DataFrame,
              runs: list[str]) -> pd.DataFrame:
    """`kaggle` with the run that made each row, the sha256 of its file and how it was joined."""
    sent = submission_log[submission_log["ok"].astype(str).str.lower().eq("true")
                          & submission_log["dry_run"].astype(str).str.lower().eq("false")]
    sent = sent.assign(name=[Path(f).name for f in sent["file"]],
                       when=pd.to_datetime(sent["time_utc"], errors="coerce", utc=True))
    joined = []
    for row in kaggle.itertuples(index=False):
        same = sent[(sent["message"] == row.description) & (sent["name"] == row.fileName)]
        if same.empty:
            same = sent[sent["message"] == row.description]
        if not same.empty:
            pick = same.iloc[0]
            if len(same) > 1 and pd.notna(row.date):
                pick = same.iloc[int((same["when"] - row.date).abs().argmin())]
            joined.append((pick["run"], pick["sha256"], "submission log"))
            continue
        named = _named_run(str(row.description), runs)
        joined.append((named, "", "message" if named else ""))
    return kaggle.assign(run=[j[0] for j in joined], sha256=[j[1] for j in joined],
                         joined_by=[j[2] for j in joined])


def kaggle_columns(joined: pd.DataFrame) -> pd.DataFrame:
    """Per run: its latest submission's status and public score (the latest scored one's),
    private score when Kaggle shows one, and how many submissions Kaggle lists."""
    rows = []
    for run, group in joined[joined["run"].notna()].groupby("run"):
        group = group.sort_values("date", ascending=False)
        scored = group[group["publicScore"].notna()]
        latest = scored.iloc[0] if not scored.empty else None
        rows.append({"run": run, "kaggle_status": group.iloc[0]["status"],
                     "kaggle_public": None if latest is None else latest["publicScore"],
                     "kaggle_private": None if latest is None else latest["privateScore"],
                     "kaggle_submissions": len(group)})
    return pd.DataFrame(rows, columns=["run", "kaggle_status", "kaggle_public",
                                       "kaggle_private", "kaggle_submissions"])


def kaggle_scores(outputs: Path, slugs: list[str], runs: list[str],
                  env: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Kaggle's submissions to each competition in `slugs`, joined to `runs` (the run folders
    of `outputs`); saved as outputs/kaggle_submissions.csv; the per-run columns."""
    from kit.submission.store import read_log

    submission_log = read_log(outputs / "submissions.csv")
    tables, problems = [], []
    for slug in slugs:
        try:
            listed = fetch_submissions(slug, env)
        except KitError as err:  # e.g. a local demo competition Kaggle does not know
            problems.append(f"{slug}: {err}")
            log.warning("No Kaggle scores for %s: %s", slug, err)
            continue
        log.info("Kaggle lists %d submission(s) to %s", len(listed), slug)
        tables.append(join_runs(listed, submission_log, runs).assign(competition=slug))
    if problems and not tables:
        raise KitError("Kaggle's submissions could not be read for any competition:\n"
                       + "\n".join(problems))
    joined = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    if joined.empty:
        return kaggle_columns(pd.DataFrame(columns=[*COLUMNS, "run"]))
    from kit.core.atomic import write_atomic

    write_atomic(outputs / SUBMISSIONS_FILE, joined.to_csv(index=False))
    unknown = joined[joined["run"].isna()]
    if not unknown.empty:
        log.warning("%d Kaggle submission(s) match no run here (message and file unknown to "
                    "outputs/submissions.csv, no run named in the message): %s", len(unknown),
                    "; ".join(unknown["description"].astype(str).head(5)))
    return kaggle_columns(joined)
