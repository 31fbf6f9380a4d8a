"""Pseudo-labels: unlabelled rows the teacher is sure of, with its soft (or hard) labels.

The candidates are the test rows (`pseudo.test`) and the rows of `pseudo.files` (tables with the
competition's text columns, predicted once by the teacher and cached in the run folder). With
`distill.targets: fold` the teacher of a student fold is the teacher's fit of that fold
(kit.models.distill.fold_teacher), so each fold gets its own pseudo rows; with `oof` it is the
teacher's fold mean. A row joins when the teacher's highest class probability is at least
`pseudo.min_confidence`; its label is that class, its soft target the teacher's probabilities
(`pseudo.soft`) or the class one-hot. The rows join the fold's training rows and never a
validation (OOF) row, so the student's scores stay measured on labelled rows only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kit.core.rundir import RunDir
from kit.data.competition import Competition, render_texts
from kit.data.readers import read_table
from kit.errors import KitError
from kit.models.distill.teacher import Teacher
from kit.models.kinds.base import LoadMember

__all__ = ["PseudoRows", "pseudo_rows", "select_confident"]

log = logging.getLogger(__name__)


@dataclass
class PseudoRows:
    """The rows that joined: texts as the student renders them, labels, soft targets, counts."""

    texts: list[str]
    labels: np.ndarray  # the teacher's class of each row
    targets: np.ndarray  # (n, K): the teacher's probabilities, or the class one-hot
    per_class: dict[str, int]  # rows that joined, per class name
    candidates: int  # unlabelled rows considered


def select_confident(texts: list[str], probs: np.ndarray, min_confidence: float, soft: bool,
                     labels: list[str]) -> PseudoRows:
    """The rows whose highest teacher probability is at least `min_confidence`."""
    keep = np.flatnonzero(probs.max(axis=1) >= min_confidence) if len(probs) else np.zeros(0, int)
    chosen = probs[keep]
    classes = chosen.argmax(axis=1).astype(np.int64)
    targets = chosen if soft else np.eye(len(labels))[classes]
    counts = np.bincount(classes, minlength=len(labels))
    return PseudoRows([texts[i] for i in keep], classes, targets,
                      {name: int(n) for name, n in zip(labels, counts, strict=True)}, len(probs))


def pseudo_rows(run: RunDir, comp: Competition, teacher: Teacher, test_texts: list[str],
                test_probs: np.ndarray, template: str | None, load_member: LoadMember,
                fold: str | None = None) -> PseudoRows:
    """The candidates of `pseudo` (test rows, files) that the teacher labels confidently.

    `test_texts`: the test rows as the student renders them, `test_probs` the teacher's
    probabilities of them; `template`: the student's prompt_template (the files' rows are
    rendered with it for the student, with the teacher's own for the teacher); `load_member`
    loads the teacher to predict the files: its fit of `fold` (a tag) alone, or all of it.
    """
    cfg = run.params.pseudo
    texts: list[str] = []
    probs = [np.zeros((0, len(comp.labels)))]
    if cfg.test:
        texts += list(test_texts)
        probs.append(test_probs)
    for name in cfg.files:
        file_texts, file_probs = _file_rows(run, comp, teacher, name, template, load_member, fold)
        texts += file_texts
        probs.append(file_probs)
    return select_confident(texts, np.concatenate(probs), cfg.min_confidence, cfg.soft,
                            comp.labels)


def _file_rows(run: RunDir, comp: Competition, teacher: Teacher, name: str,
               template: str | None, load_member: LoadMember,
               fold: str | None) -> tuple[list[str], np.ndarray]:
    """One `pseudo.files` table: the student's texts and the teacher's (or its fit of `fold`)
    probabilities, cached."""
    path = _locate(run, comp, name)
    params = run.params.competition
    df = read_table(path, delimiter=params.csv_delimiter, encoding=params.encoding)
    texts = render_texts(df, params, str(path), template)

    def predict() -> np.ndarray:
        log.info(f"pseudo.files: the teacher {teacher.name} predicts the {len(texts)} rows of "
                 f"{path}" + (f" (its fit of {fold})" if fold else ""))
        model = load_member(teacher.folder, teacher.params, teacher.model, None, comp.labels,
                            "auto", fold=fold)
        return model.predict(teacher.render(df, model, str(path)))

    what = path.stem + (f"-{fold}" if fold else "")
    return texts, teacher.cached(run.path / "pseudo", what, [fold or "", *texts], predict)


def _locate(run: RunDir, comp: Competition, name: str) -> Path:
    path = Path(name)
    tried = [path] if path.is_absolute() else [comp.folder / path, run.root / path]
    for candidate in tried:
        if candidate.is_file():
            return candidate
    raise KitError(f"`pseudo.files` names {name!r}, but there is no file at "
                   f"{' or '.join(map(str, tried))}. Give a path from the competition's data "
                   "folder or the project root (CSV or JSON lines with the text columns).")
