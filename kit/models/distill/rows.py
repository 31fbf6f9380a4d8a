"""One fold's training rows for a student: its labelled rows with the teacher's probabilities as
soft targets, plus the pseudo-labelled rows, and what the run's metrics record about them.

Where the soft targets come from (`distill.targets`): `fold` (the default), the teacher fit of
this same fold, which never saw the fold's validation rows (kit.models.distill.fold_teacher), for
the training rows and for the pseudo-labelled test rows; `oof`, the teacher's out-of-fold
probability of each training row (kit.models.distill.teacher) and its fold-mean test
probabilities: softer targets, but made by teacher fits that trained on this fold's validation
rows, so the student's OOF score is optimistic. Either way the validation rows are the fold's own
and scored with their labels.

`pseudo.validation` adds them once more, unlabelled, as pseudo rows: the fold's validation rows
the teacher is sure of, with the probabilities of the teacher fit that held them out (`fold`; with
`oof`, their OOF rows). The test rows join every fold's training this way, so without it the
student's OOF score misses what pseudo-labelling gives its test predictions, and a blend fitted on
that OOF may weigh it too low. With `fold`, no label of a validation row reaches the student of
its fold. (On the TREC demo it raised the student's OOF from 0.0070 below its teacher's to 0.0028
above, and its held-out scores fell: README, "Competing".)
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from kit.config.params import PseudoParams, TransformerParams
from kit.core.progress import show_progress
from kit.core.rundir import RunDir
from kit.data.competition import Competition
from kit.data.folds import Fold
from kit.models.distill.fold_teacher import fold_teacher_probs, teacher_fold
from kit.models.distill.pseudo import PseudoRows, pseudo_rows, select_confident
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
        fit = teacher_fold(teacher, fold)
        teacher_val, teacher_test = fit.val_probs, fit.test_probs
    else:
        soft, teacher_test = teacher.oof[rows], teacher.test
        teacher_val = teacher.oof[fold.val_rows]
    metric = params.competition.metric
    scored = fold.val_rows if fold.is_holdout else np.arange(len(comp.y))  # the student's too
    extra: dict[str, Any] = {"teacher": teacher.name, "distill_targets": params.distill.targets,
                             f"teacher_{metric}": teacher.score(comp, metric, scored)}
    if params.pseudo.enabled:
        pseudo = pseudo_rows(run, comp, teacher, test_texts, teacher_test, cfg.prompt_template,
                             load_member, fold.tag if by_fold else None)
        own = _own_rows(params.pseudo, fold, texts, teacher_val, comp.labels)
        train_texts += pseudo.texts + own.texts
        labels = np.concatenate([labels, pseudo.labels, own.labels])
        soft = np.concatenate([soft, pseudo.targets, own.targets])
        facts = {"pseudo_rows": len(pseudo.texts), "pseudo_candidates": pseudo.candidates,
                 "pseudo_per_class": pseudo.per_class}
        if params.pseudo.validation:
            facts.update(pseudo_val_rows=len(own.texts), pseudo_val_candidates=own.candidates)
        # each fold's own, by tag (its teacher fit picks them with `targets: fold`)
        extra.update(facts if fold.is_holdout else {k: {fold.tag: v} for k, v in facts.items()})
        counts = ", ".join(f"{name} {n}" for name, n in pseudo.per_class.items())
        own_note = (f"; {len(own.texts)} of its {own.candidates} validation rows, unlabelled"
                    if params.pseudo.validation else "")
        show_progress(log, f"student {fold.tag}: {len(pseudo.texts)} of {pseudo.candidates} "
                           f"unlabelled rows joined its training rows (teacher {teacher.name} "
                           f">= {params.pseudo.min_confidence:g}): {counts}{own_note}")
    distill = DistillTargets(soft, params.distill.alpha, params.distill.temperature)
    return TrainingRows(train_texts, labels, distill, extra)


def _own_rows(cfg: PseudoParams, fold: Fold, texts: Any, teacher_val: np.ndarray,
              labels: list[str]) -> PseudoRows:
    """`pseudo.validation`: the fold's validation rows (of `texts`, all training rows as the
    student renders them) the teacher is sure of, as pseudo rows (none without it, or for the
    full-data refit, which has no validation rows)."""
    if not cfg.validation or fold.is_refit:
        return select_confident([], np.zeros((0, len(labels))), cfg.min_confidence, cfg.soft,
                                labels)
    return select_confident([texts[i] for i in fold.val_rows], teacher_val, cfg.min_confidence,
                            cfg.soft, labels)
