"""One fold's training rows for a student: its labelled rows with the teacher's probabilities as
soft targets, plus the pseudo-labelled rows, and what the run's metrics record about them.

Where the soft targets come from (`distill.targets`): `fold` (the default), the teacher fit of
this same fold, which never saw the fold's validation rows (kit.models.distill.fold_teacher), for
the training rows and for the pseudo-labelled test rows; `oof`, the teacher's out-of-fold
probability of each training row (kit.models.distill.teacher) and its fold-mean test
probabilities: softer targets, but made by teacher fits that trained on this fold's validation
rows, so the student's OOF score is optimistic. Either way the validation rows are the fold's own
and get no soft target or pseudo row.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from kit.config.params import TransformerParams
from kit.core.progress import show_progress
from kit.core.rundir import RunDir
from kit.data.competition import Competition
from kit.data.folds import Fold
from kit.models.distill.fold_teacher import fold_teacher_probs, fold_test_probs
from kit.models.distill.pseudo import pseudo_rows
from kit.models.distill.targets import DistillTargets
from kit.models.distill.teacher import load_teacher
from kit.models.kinds.base import LoadMember
from kit.models.kinds.transformer import TrainingRows

__all__ = ["student_rows"]

log = logging.getLogger(__name__)


def student_rows(run: RunDir, comp: Competition, fold: Fold, texts: Any, test_texts: Any,
                 cfg: TransformerParams, load_member: LoadMember) -> TrainingRows:
    """The fold's training texts, labels and soft targets (`distill.targets`), pseudo rows added.

    `texts`/`test_texts`: the training and test rows as the student renders them; `cfg`: its
    settings (kit.config.distill.student_transformer); `load_member`: how the teacher (or its
    fit of this fold) is loaded to predict the fold's training rows and `pseudo.files`.
    """
    params = run.params
    teacher = load_teacher(run, comp)
    rows = fold.train_rows
    train_texts = [texts[i] for i in rows]
    # The full-data refit has no validation rows to keep clean, and no teacher fit of its own:
    # it learns from the teacher's OOF rows (no fit trained on the row) and fold-mean test.
    by_fold = params.distill.targets == "fold" and not fold.is_refit
    labels = comp.y[rows]
    if by_fold:
        soft = fold_teacher_probs(run, comp, teacher, fold, load_member)
        teacher_test = fold_test_probs(teacher, fold)
    else:
        soft, teacher_test = teacher.oof[rows], teacher.test
    metric = params.competition.metric
    scored = fold.val_rows if fold.is_holdout else np.arange(len(comp.y))  # the student's too
    extra: dict[str, Any] = {"teacher": teacher.name, "distill_targets": params.distill.targets,
                             f"teacher_{metric}": teacher.score(comp, metric, scored)}
    if params.pseudo.enabled:
        pseudo = pseudo_rows(run, comp, teacher, test_texts, teacher_test, cfg.prompt_template,
                             load_member, fold.tag if by_fold else None)
        train_texts += pseudo.texts
        labels = np.concatenate([labels, pseudo.labels])
        soft = np.concatenate([soft, pseudo.targets])
        facts = {"pseudo_rows": len(pseudo.texts), "pseudo_candidates": pseudo.candidates,
                 "pseudo_per_class": pseudo.per_class}
        # each fold's own, by tag (its teacher fit picks them with `targets: fold`)
        extra.update(facts if fold.is_holdout else {k: {fold.tag: v} for k, v in facts.items()})
        counts = ", ".join(f"{name} {n}" for name, n in pseudo.per_class.items())
        show_progress(log, f"student {fold.tag}: {len(pseudo.texts)} of {pseudo.candidates} "
                           f"unlabelled rows joined its training rows (teacher {teacher.name} "
                           f">= {params.pseudo.min_confidence:g}): {counts}")
    distill = DistillTargets(soft, params.distill.alpha, params.distill.temperature)
    return TrainingRows(train_texts, labels, distill, extra)
