"""One fold's training rows for a student: its labelled rows with the teacher's OOF probabilities,
plus the pseudo-labelled rows, and what the run's metrics record about them.

The no-leak rule: a training row's soft target is the teacher's out-of-fold probability of that
row (kit.models.distill.teacher), never the probability of a teacher fit that trained on it; the
validation rows are the fold's own and get no soft target or pseudo row. (The teacher fit that
predicted a training row did train on other rows, this fold's validation rows among them, as a
stacked model's level-1 fits do; the student sees only its probabilities, not those labels.)
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
from kit.models.distill.pseudo import pseudo_rows
from kit.models.distill.targets import DistillTargets
from kit.models.distill.teacher import load_teacher
from kit.models.kinds.base import LoadMember
from kit.models.kinds.transformer import TrainingRows

__all__ = ["student_rows"]

log = logging.getLogger(__name__)


def student_rows(run: RunDir, comp: Competition, fold: Fold, texts: Any, test_texts: Any,
                 cfg: TransformerParams, load_member: LoadMember) -> TrainingRows:
    """The fold's training texts, labels and soft targets (teacher OOF), pseudo rows added.

    `texts`/`test_texts`: the training and test rows as the student renders them; `cfg`: its
    settings (kit.config.distill.student_transformer); `load_member`: how the teacher is loaded
    to predict `pseudo.files`.
    """
    params = run.params
    teacher = load_teacher(run, comp)
    rows = fold.train_rows
    train_texts = [texts[i] for i in rows]
    labels, soft = comp.y[rows], teacher.oof[rows]
    metric = params.competition.metric
    scored = fold.val_rows if fold.is_holdout else np.arange(len(comp.y))  # the student's too
    extra: dict[str, Any] = {"teacher": teacher.name,
                             f"teacher_{metric}": teacher.score(comp, metric, scored)}
    if params.pseudo.enabled:
        pseudo = pseudo_rows(run, comp, teacher, test_texts, cfg.prompt_template, load_member)
        train_texts += pseudo.texts
        labels = np.concatenate([labels, pseudo.labels])
        soft = np.concatenate([soft, pseudo.targets])
        extra.update(pseudo_rows=len(pseudo.texts), pseudo_candidates=pseudo.candidates,
                     pseudo_per_class=pseudo.per_class)
        counts = ", ".join(f"{name} {n}" for name, n in pseudo.per_class.items())
        show_progress(log, f"student {fold.tag}: {len(pseudo.texts)} of {pseudo.candidates} "
                           f"unlabelled rows joined its training rows (teacher {teacher.name} "
                           f">= {params.pseudo.min_confidence:g}): {counts}")
    distill = DistillTargets(soft, params.distill.alpha, params.distill.temperature)
    return TrainingRows(train_texts, labels, distill, extra)
