"""The teacher of one student fold (`distill.targets: fold`): the teacher fit of that same fold.

Why not the teacher's OOF rows (`targets: oof`): the OOF probability of a training row of student
fold k comes from the teacher fit that held out the row's own fold j, and that fit trained on
fold k's rows, labels included. The student of fold k learns them through its soft targets and
is then scored on fold k: its OOF score is optimistic. Measured on the TREC demo (demo-win, 5
MiniLM folds as teacher): the student was 0.0141 above its teacher on OOF macro-F1, and 0.0098
below it on local public and 0.0058 on local private; a blend chosen on that OOF lost on private.

Fold by fold (how issue 19 describes LMSYS 2024's 1st place distilling its teachers): student
fold k learns from teacher fit k alone, which never saw fold k: its probabilities of fold k's
training rows (the rows it trained on; predicted once, cached in the run folder so a resumed fold
gets the same targets) and its own test probabilities for the pseudo-labels (with
`pseudo.validation`, also its probabilities of fold k's validation rows, which it held out: the
student sees those rows unlabelled, as it sees the test rows). Nothing the student of fold k sees
then depends on fold k's labels, and its OOF score is as honest as any model's. The price: one
teacher prediction pass over each fold's training rows, and in-sample soft targets (surer than
OOF ones).
"""

from __future__ import annotations

import logging

import numpy as np

from kit.core.progress import show_progress
from kit.core.rundir import RunDir
from kit.data.competition import Competition
from kit.data.folds import Fold
from kit.errors import KitError
from kit.models.distill.teacher import Teacher
from kit.models.kinds.base import LoadMember
from kit.models.oof import FoldPredictions, fold_path, read_fold

__all__ = ["fold_teacher_probs", "teacher_fold"]

log = logging.getLogger(__name__)


def teacher_fold(teacher: Teacher, fold: Fold) -> FoldPredictions:
    """The teacher's fit of `fold` (its seeds' mean) as saved when it trained (kit.models.oof):
    its probabilities of the fold's validation rows, which it held out, and of the test rows."""
    path = fold_path(teacher.folder, teacher.model, fold.tag)
    done = read_fold(path, fold)
    if done is None:
        raise KitError(
            f"The teacher {teacher.name} has no saved fit of fold {fold.tag} ({path}): "
            "`distill.targets: fold` needs a teacher trained on the student's k folds (a model "
            "listed in `models` of a k-fold run; not a blend or a full-data refit). Name such a "
            "model (`outputs/<run>:<model>`), or set distill.targets: oof.")
    return done


def fold_teacher_probs(run: RunDir, comp: Competition, teacher: Teacher, fold: Fold,
                       load_member: LoadMember) -> np.ndarray:
    """The probabilities the teacher's fit of `fold` gives the fold's training rows (in the
    order of `fold.train_rows`): loaded and predicted once, then read from the run folder."""
    rows = fold.train_rows

    def predict() -> np.ndarray:
        model = load_member(teacher.folder, teacher.params, teacher.model, None, comp.labels,
                            "auto", fold=fold.tag)
        show_progress(log, f"student {fold.tag}: the teacher's fit of this fold "
                           f"({teacher.name}) predicts its {len(rows)} training rows")
        return model.predict(teacher.render(comp.train.iloc[rows], model, "train"))

    ids = [fold.tag, *map(str, comp.train_ids[rows].tolist())]
    return teacher.cached(run.path / "distill", fold.tag, ids, predict)
