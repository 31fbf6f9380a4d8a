"""The teacher of a student: its saved out-of-fold and test probabilities, checked to fit this run.

`distill.teacher` names a model of this run listed before the student, or another run
(`outputs/<run>`: its best model; `outputs/<run>:<model>`). Its saved predictions
(predictions/<model>.npz) must come from the same competition (classes, training and test rows)
and, for a k-fold student, the same folds (folds.json); and they must be out of fold for every
training row. A hold-out teacher (`cv.folds` 1) covers only its validation rows, and is refused.
With `distill.targets: oof` they are the soft targets, and the teacher is never loaded; with
`fold` (kit.models.distill.fold_teacher) its fit of each fold is loaded to predict that fold's
training rows, and `Teacher.render` / `Teacher.cached` render those rows and keep the result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from kit.config.distill import teacher_in_run
from kit.config.params import Params, params_from_dict
from kit.core.atomic import save_npz
from kit.core.rundir import RunDir
from kit.data.competition import Competition
from kit.data.folds import FOLDS_FILE
from kit.data.pairs import render_as_read
from kit.errors import KitError
from kit.evaluation import metrics
from kit.models.kinds.base import LoadedModel

__all__ = ["Teacher", "load_teacher"]

log = logging.getLogger(__name__)
# What makes two runs predict the same classes in the same columns (besides the rows, compared
# by id): a teacher run that differs in one of these is another competition to the student.
SAME_CLASSES = ("slug", "task", "label_column", "labels", "label_map", "label_delimiter",
                "positive_label")


@dataclass
class Teacher:
    """A teacher's probabilities, aligned to this run's rows: OOF of every training row, test."""

    name: str  # as the student's metrics name it: `tfidf` (this run) or `demo-cv/ensemble`
    folder: Path  # the run folder that trained it
    params: Params  # that run's params
    model: str  # its model name in that run
    oof: np.ndarray  # (n_train, K), in the order of comp.train
    test: np.ndarray  # (n_test, K), in the order of comp.test: the fold mean (never trained on)

    def score(self, comp: Competition, metric: str, rows: np.ndarray) -> float:
        """The teacher's `metric` on training `rows` (its OOF probabilities)."""
        return float(metrics.score(metric, comp.y[rows], self.oof[rows], None, comp.task))

    def render(self, df: pd.DataFrame, model: LoadedModel, file: str) -> list[str]:
        """The rows of `df` as the teacher's loaded `model` reads them: its run's template, each
        text with its swapped rendering when it predicts with a `swap` view (kit.data.pairs)."""
        return render_as_read(df, self.params.competition, file, model.template,
                              model.pair_columns)

    def cached(self, folder: Path, what: str, key: list[str],
               predict: Callable[[], np.ndarray]) -> np.ndarray:
        """`predict()` (the teacher's probabilities of some rows), saved once as
        `folder/<teacher>-<what>.npz` and read back while `key` (the rows) is the same."""
        digest = hashlib.sha256("\x00".join([self.name, str(self.folder.resolve()), *key])
                                .encode("utf-8", "surrogatepass")).hexdigest()
        path = folder / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', self.name)}-{what}.npz"
        if path.is_file():
            with np.load(path) as saved:
                if str(saved["key"]) == digest:
                    return saved["probs"]
        probs = predict()
        save_npz(path, key=np.array(digest), probs=probs)
        return probs


def load_teacher(run: RunDir, comp: Competition) -> Teacher:
    """The student's teacher (`distill.teacher`) with its OOF and test probabilities, or a
    KitError saying why they cannot be a student's soft targets and what to do."""
    spec = run.params.distill.teacher
    if spec is None:
        raise KitError("`distill.teacher` is null: name the student's teacher.")
    own = teacher_in_run(run.params)
    if own is not None:
        folder, params, model, name = run.path, run.params, own, own
    else:
        folder, model = _teacher_run(run, spec)
        params = params_from_dict(yaml.safe_load((folder / "params.yaml").read_text()),
                                  source=str(folder / "params.yaml"))
        _check_same_classes(run.params, params, folder)
        model = model or _best_model(folder, params, run.root)
        name = f"{folder.name}/{model}"
        _check_same_folds(run, folder)
    preds = RunDir(folder, params, run.root).load_predictions(model)
    other_data = "it was trained on other data. Name a teacher of the same competition rows."
    holdout = (f"it validated on a hold-out split (cv.folds 1 in {folder / 'params.yaml'}), so "
               "its validation probabilities cover only those rows, and a student needs the "
               "teacher's out-of-fold probability of every training row. Train the teacher with "
               "k-fold (cv.folds >= 2), in this run or in a teacher run.")
    oof = _aligned(preds.val_ids, preds.val_probs, comp.train_ids, name, "training",
                   holdout if params.cv.folds == 1 else other_data)
    test = _aligned(preds.test_ids, preds.test_probs, comp.test_ids, name, "test", other_data)
    if oof.shape[1] != len(comp.labels):
        raise KitError(f"The teacher {name} predicts {oof.shape[1]} classes; this competition "
                       f"has {len(comp.labels)} ({comp.labels}).")
    return Teacher(name, folder, params, model, oof, test)


def _teacher_run(run: RunDir, spec: str) -> tuple[Path, str | None]:
    """The teacher run's folder and model (None: its best) from `outputs/<run>[:<model>]`."""
    where, _, model = spec.rpartition(":") if ":" in spec else (spec, "", "")
    path = Path(where)
    # `outputs/<run>` from the project root, or `<run>` beside this run (as ensemble.runs names
    # runs), or an absolute folder.
    tried = [path] if path.is_absolute() else [run.root / path, run.path.parent / path]
    for folder in tried:
        if (folder / "params.yaml").is_file():
            if folder.resolve() == run.path.resolve():
                raise KitError(f"`distill.teacher` {spec!r} is this very run; name a model of it "
                               "(listed before student in `models`) or another run.")
            return folder, model or None
    raise KitError(
        f"`distill.teacher` is {spec!r}, but no run folder (with params.yaml) is at "
        f"{' or '.join(map(str, dict.fromkeys(tried)))}. Train the teacher run first (e.g. "
        "./run_all.sh params/<teacher>.yaml), or name a model of this run listed before student.")


def _check_same_classes(mine: Params, theirs: Params, folder: Path) -> None:
    for key in SAME_CLASSES:
        a, b = getattr(mine.competition, key), getattr(theirs.competition, key)
        if a != b:
            raise KitError(
                f"The teacher run {folder} has `competition.{key}` {b!r}, this run {a!r}: its "
                "probabilities are not of this competition's classes. Name a teacher run of the "
                "same competition (same competition params).")


def _best_model(folder: Path, params: Params, root: Path) -> str:
    best = RunDir(folder, params, root).state().best
    if best is None:
        raise KitError(f"The teacher run {folder} has no best model yet: its 02_train did not "
                       "finish. Finish it, or name its model: `<run>:<model>`.")
    return best.model


def _check_same_folds(run: RunDir, folder: Path) -> None:
    """A k-fold student's teacher run made the same folds (folds.json, row by row)."""
    mine = run.path / FOLDS_FILE
    if not mine.is_file():  # a hold-out student: any teacher OOF of every row will do
        return
    theirs = folder / FOLDS_FILE
    if not theirs.is_file():
        raise KitError(
            f"The teacher run {folder} validated on one hold-out split (no {FOLDS_FILE}); this "
            f"run trains k folds. Name a teacher run trained with the same folds (the same data, "
            f"seed, `cv` and `validation` params as this run).")
    a, b = json.loads(mine.read_text()), json.loads(theirs.read_text())

    def by_id(saved: dict) -> dict[str, tuple[int, ...]]:
        return dict(zip(saved["ids"], zip(*saved["fold_of"], strict=True), strict=True))

    if (a["folds"], a["repeats"]) != (b["folds"], b["repeats"]) or by_id(a) != by_id(b):
        raise KitError(
            f"The teacher run {folder} made other folds ({b['folds']} folds x {b['repeats']} "
            f"repeat(s), seed {b['seed']}, {len(b['ids'])} rows) than this run ({a['folds']} x "
            f"{a['repeats']}, seed {a['seed']}, {len(a['ids'])} rows). A student trains on the "
            "teacher's folds: give it the teacher run's data, `seed`, `cv` and `validation`.")


def _aligned(ids: np.ndarray, probs: np.ndarray, want: np.ndarray, name: str, rows: str,
             why: str) -> np.ndarray:
    """`probs` reordered to the ids `want`; a KitError (saying `why`) when some are missing."""
    where = {v: i for i, v in enumerate(map(str, ids.tolist()))}
    missing = [v for v in map(str, want.tolist()) if v not in where]
    if missing:
        raise KitError(f"The teacher {name} has no probability for {len(missing)} of the "
                       f"{len(want)} {rows} rows (e.g. id {missing[0]}): {why}")
    return probs[np.array([where[v] for v in map(str, want.tolist())], dtype=int)]
