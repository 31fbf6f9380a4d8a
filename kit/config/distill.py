"""Params of a distilled `student`: its teacher and loss (`distill`), its pseudo-labels (`pseudo`).

Part of the schema (kit/config/schema.py; see its docstring for the field conventions). The
student is a transformer (kit.models.kinds.student) whose settings are the run's `transformer`
section with `distill.transformer` merged over it; `check_distill` holds the rules between these
sections and `models`, run when Params is built, so `python -m kit check` refuses what a run would.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from kit.config.coerce import build_section
from kit.config.model_sections import TransformerParams
from kit.config.section import MODEL_KINDS, Section, check_optimizer, check_template
from kit.config.views import check_views_against
from kit.errors import KitError

# The functions below take the whole kit.config.schema.Params, which imports this module: typed
# as `Params` in words only (an import, even for type checking, would make a cycle).
Params = Any

__all__ = ["STUDENT", "DistillParams", "PseudoParams", "check_distill", "student_transformer",
           "teacher_in_run"]

STUDENT = "student"  # the kind these sections configure (kit.models.kinds.student)
ENSEMBLE = "ensemble"


@dataclass
class DistillParams(Section):
    """A `student` transformer trained on a teacher's out-of-fold probabilities (distillation)."""

    section: ClassVar[str] = "distill"

    teacher: str | None = field(default=None, metadata={
        "help": "A model listed before student in `models`, or a run: `outputs/<run>[:<model>]`."})
    targets: Literal["fold", "oof"] = field(default="fold", metadata={
        "help": "fold: the teacher's fit of the same fold (honest OOF); oof: its OOF rows "
                "(optimistic OOF)."})
    alpha: float = field(default=0.5, metadata={
        "help": "Loss = (1 - alpha) CE(labels) + alpha T^2 KL(teacher_T || student_T).",
        "within": "[0, 1]"})
    temperature: float = field(default=2.0, metadata={
        "help": "T: both distributions are softened by it before the KL term.",
        "within": "(0, inf)"})
    transformer: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "`transformer` keys for the student (e.g. `{model: minilm}`); {}: the same."})


@dataclass
class PseudoParams(Section):
    """Pseudo-labels: unlabelled rows the teacher is sure of, added to each fold's training rows."""

    section: ClassVar[str] = "pseudo"

    enabled: bool = field(default=False, metadata={
        "help": "Add confidently teacher-labelled rows to the student's training (never to OOF)."})
    min_confidence: float = field(default=0.9, metadata={
        "help": "A row joins when the teacher's highest class probability is at least this.",
        "within": "[0, 1]"})
    soft: bool = field(default=True, metadata={
        "help": "Distil the teacher's probabilities of a joined row; false: its argmax label."})
    test: bool = field(default=True, metadata={
        "help": "Take the test rows (the teacher's fold-mean test probabilities)."})
    files: list[str] = field(default_factory=list, metadata={
        "help": "Unlabelled tables with the text columns (from the data folder); the teacher "
                "predicts them."})
    validation: bool = field(default=False, metadata={
        "help": "Also each fold's validation rows, unlabelled: the OOF shows pseudo-labels' "
                "effect."})


def student_transformer(params: Params) -> TransformerParams:
    """The student's training settings: `distill.transformer` merged over `transformer`.

    Built strictly like a params file (unknown keys and wrong types named), then the
    transformer section's own ranges and rules run on the merged settings.
    """
    overrides = dict(params.distill.transformer)
    lora = overrides.pop("lora", {})
    if not isinstance(lora, dict):
        raise KitError(f"`distill.transformer.lora` is {lora!r}; write a mapping of "
                       "`transformer.lora` keys, e.g. {r: 16}.")
    merged = dataclasses.asdict(params.transformer)
    merged.update(overrides)
    merged["lora"] = {**merged["lora"], **lora}
    try:
        cfg = build_section(TransformerParams, merged, prefix="distill.transformer.",
                            source="distill.transformer (merged over transformer)")
    except KitError as err:
        if "unknown key" not in str(err):
            raise
        raise KitError(f"{err} (`distill.transformer` takes `transformer` keys.)") from None
    comp = params.competition  # the test-time views' rules (fills swap_columns when implied)
    check_views_against(cfg, comp.text_columns, comp.labels, params.cv.folds)
    return cfg


def teacher_in_run(params: Params) -> str | None:
    """The teacher's model name when it is a model of this run, else None (another run)."""
    teacher = params.distill.teacher
    return teacher if teacher in params.models else None


def check_distill(params: Params) -> None:
    """Rules between `models`, `cv`, `distill`, `pseudo` and the competition's task."""
    distill, pseudo = params.distill, params.pseudo
    if STUDENT not in params.models:
        if distill.teacher is not None or distill.transformer:
            raise KitError("`distill` names a teacher (or student settings) but `models` has no "
                           f"student; add student to `models` ({params.models}) or remove "
                           "`distill`.")
        if pseudo.enabled:
            raise KitError("`pseudo.enabled` adds rows to the student's training, but `models` "
                           "has no student. Add student (and `distill.teacher`), or set "
                           "pseudo.enabled: false.")
        return
    if distill.teacher is None:
        raise KitError(
            "`models` lists student but `distill.teacher` is null. Name the teacher: a model "
            "listed before student in `models` (e.g. transformer), or another run of the same "
            "competition and folds (`outputs/<run>`, its best model, or `outputs/<run>:<model>`).")
    _check_teacher_in_run(params)
    if distill.targets == "fold" and params.cv.folds == 1:
        raise KitError(
            "`distill.targets` is fold: each student fold learns from the teacher fit of the "
            "same fold, and this student validates on one hold-out split (cv.folds 1). Train "
            "the student with the teacher's k folds (the same `cv`, `seed` and data), or set "
            "distill.targets: oof (its OOF score is then optimistic: the teacher fits saw its "
            "validation rows).")
    if pseudo.enabled and params.competition.task == "multilabel":
        raise KitError("`pseudo.enabled` picks rows by the teacher's highest class probability, "
                       "which a multilabel task does not have. Set pseudo.enabled: false.")
    if pseudo.enabled and not (pseudo.test or pseudo.files or pseudo.validation):
        raise KitError("`pseudo.enabled` with `pseudo.test: false`, `pseudo.validation: false` "
                       "and no `pseudo.files`: there are no rows to pseudo-label. Set "
                       "pseudo.test: true or list files.")
    if pseudo.validation and not pseudo.enabled:
        raise KitError("`pseudo.validation: true` adds pseudo-labelled rows, but "
                       "`pseudo.enabled` is false. Set pseudo.enabled: true, or remove "
                       "pseudo.validation.")
    cfg = student_transformer(params)
    check_template(cfg.prompt_template, params.competition.text_columns,
                   "distill.transformer.prompt_template")
    check_optimizer(cfg.optimizer)


def _check_teacher_in_run(params: Params) -> None:
    teacher = params.distill.teacher
    if teacher == STUDENT:
        raise KitError("`distill.teacher` is student: a student cannot teach itself. Name a model "
                       "listed before it in `models`, or another run.")
    if teacher == ENSEMBLE:
        raise KitError(
            "`distill.teacher` is ensemble, but this run's ensemble is fitted after all its "
            "models, the student included. Train the ensemble in a run of its own and name "
            "that run (`outputs/<run>:ensemble`, or `outputs/<run>` when the ensemble is its "
            "best model).")
    if teacher not in params.models:
        if teacher in MODEL_KINDS:
            raise KitError(f"`distill.teacher` is {teacher}, which `models` {params.models} does "
                           "not list: list it before student (or name a run: outputs/<run>).")
        if ":" not in teacher and "/" not in teacher:
            close = difflib.get_close_matches(teacher, params.models, n=1)
            if close:
                raise KitError(f"`distill.teacher` is {teacher!r}: did you mean the model "
                               f"{close[0]!r} of `models`? (A run is written outputs/{teacher}.)")
        return  # another run: found, and checked against this one, when the student trains
    if params.models.index(teacher) > params.models.index(STUDENT):
        raise KitError(f"`distill.teacher` is {teacher}, listed after student in `models` "
                       f"{params.models}; the teacher trains first: list it before student.")
    if params.cv.folds == 1:
        raise KitError(
            f"`distill.teacher` is {teacher} of this run, which validates on one hold-out split "
            "(cv.folds 1): its validation probabilities cover only the validation rows, and the "
            "student needs the teacher's out-of-fold probability of every training row. Use "
            "k-fold (cv.folds >= 2: each row's teacher probability then comes from a fit that "
            "did not train on it), or a teacher run trained with k-fold (outputs/<run>).")
