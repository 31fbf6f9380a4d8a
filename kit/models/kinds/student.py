"""The `student` kind: a transformer distilled from a teacher's soft targets, with pseudo-labels.

It trains exactly like the transformer kind (same Trainer, checkpoints, resume and export), with
two differences: its settings are `transformer` with `distill.transformer` merged over it
(kit.config.distill), and each fold's training rows carry the teacher's out-of-fold probabilities,
plus the pseudo-labelled rows of `pseudo` (kit.models.distill.rows). At prediction it is a
transformer: its export loads, serves and packages as one.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from kit.config.distill import STUDENT as STUDENT_NAME
from kit.config.distill import student_transformer
from kit.config.params import Params, TransformerParams
from kit.core.rundir import RunDir
from kit.data.competition import Competition
from kit.data.folds import Fold
from kit.models.kinds.base import LoadMember
from kit.models.kinds.transformer import TrainingRows, TransformerKind

__all__ = ["StudentKind"]


class StudentKind(TransformerKind):
    """A transformer distilled from a teacher (`distill`), optionally with pseudo-labels."""

    name = STUDENT_NAME
    params_section = "distill"
    artifact = "model"  # the transformer's export folder (kit.models.export)

    def __init__(self, load_member: LoadMember):
        # How a teacher is loaded to predict `pseudo.files` (kit.models.kinds.load_fitted: any
        # model of a run, an ensemble included); the soft targets need no loading.
        self.load_member = load_member

    def settings(self, params: Params) -> TransformerParams:
        cfg = student_transformer(params)
        if cfg.checkpoint_dir and "checkpoint_dir" not in params.distill.transformer:
            # transformer.checkpoint_dir is shared with the transformer kind: a folder of its own
            cfg = dataclasses.replace(cfg, checkpoint_dir=str(Path(cfg.checkpoint_dir) / self.name))
        return cfg

    def training_rows(self, run: RunDir, comp: Competition, fold: Fold, texts: Any,
                      test_texts: Any) -> TrainingRows:
        from kit.models.distill.rows import student_rows

        return student_rows(run, comp, fold, texts, test_texts, self.settings(run.params),
                            self.load_member)
