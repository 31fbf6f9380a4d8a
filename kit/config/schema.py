"""The params schema: every section and key of a params file, its default, doc, range and rules.

The one home of what a params file may say, in the style of transformers' argument dataclasses:
each key is a field whose `metadata={"help": ...}` is its one-line doc (README "Params" is
rendered from it by kit.config.reference) and whose optional `"within"` is the interval its value
must lie in. Rules between keys live in each section's `check()`. Intervals and rules run when a
section is built, from YAML (kit.config.loading) or directly in code, so `python -m kit check`
refuses everything a run would refuse, with the same message, before any data is read.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from kit.config.compete import CvParams, EnsembleParams, SearchParams, run_models
from kit.config.delivery import KaggleParams, PlatformParams
from kit.config.distill import DistillParams, PseudoParams, check_distill
from kit.config.kaggle_names import check_submission
from kit.config.label_text import label_str
from kit.config.metric_names import METRIC_NAMES, metric_name
from kit.config.model_sections import LoraParams, TfidfParams, TransformerParams
from kit.config.section import (
    BLEND_SECTIONS,
    Label,
    ModelKind,
    Section,
    Task,
    check_optimizer,
    check_template,
)
from kit.config.views import check_views_against
from kit.errors import KitError

__all__ = [  # the sections defined elsewhere, re-exported: this module is the whole schema
    "CvParams",
    "DistillParams",
    "EnsembleParams",
    "KaggleParams",
    "LoraParams",
    "PlatformParams",
    "PseudoParams",
    "SearchParams",
    "TfidfParams",
    "TransformerParams",
]


@dataclass
class CompetitionParams(Section):
    """Where the data is and what its columns mean."""

    section: ClassVar[str] = "competition"

    slug: str = field(default="trec-questions", metadata={
        "help": "Kaggle competition (the URL part after /competitions/) or demo name."})
    data_dir: str | None = field(default=None, metadata={
        "help": "Folder of the files; null: `/kaggle/input/<slug>`, `data/<slug>`, else download."})
    train_file: str = field(default="train.csv", metadata={
        "help": "Training table: .csv, .jsonl, .json.gz or .jsonl.gz (JSON lines streamed)."})
    test_file: str = field(default="test.csv", metadata={"help": "Test table, same formats."})
    sample_submission_file: str = field(default="sample_submission.csv", metadata={
        "help": "Kaggle's sample submission: the submission takes its columns."})
    answer_key_file: str | None = field(default="answer_key.csv", metadata={
        "help": "Test labels for local scoring (demo competitions); skipped if absent."})
    id_column: str = field(default="id", metadata={
        "help": "Row id column (a train table without it is numbered from 0)."})
    text_columns: list[str] = field(default_factory=lambda: ["text"], metadata={
        "help": "Columns that make the text, joined by a blank line without a template."})
    text_template: str | None = field(default=None, metadata={
        "help": "Python format string over the text columns: `Question: {question}`."})
    label_column: str = field(default="label", metadata={"help": "The training label column."})
    task: Task = field(default="multiclass", metadata={
        "help": "binary (two classes), multiclass (one of K), multilabel (any of K)."})
    labels: list[Label] | None = field(default=None, metadata={
        "help": "Declared classes, binary: negative first; null: sorted labels seen in train."})
    positive_label: Label | None = field(default=None, metadata={
        "help": "Binary: the positive class; null: 1, True, yes, spam or positive if present."})
    label_delimiter: str | None = field(default=None, metadata={
        "help": "Several labels in one cell, split on this; single-label tasks keep the first."})
    label_map: dict[Label, Label] | None = field(default=None, metadata={
        "help": "Raw label -> class: exact key first, then the longest matching prefix."})
    metric: str = field(default="f1_micro", metadata={
        "help": "The competition metric: a name from the metric table (it must fit the task)."})
    ordinal: bool = field(default=False, metadata={
        "help": "Classes are ordered grades (`labels` lowest first): decode by expected grade."})
    max_rows: int | None = field(default=None, metadata={
        "help": "Read only the first N training rows (quick experiments).", "within": "[1, inf)"})
    sample_per_class: int | None = field(default=None, metadata={
        "help": "Keep at most N training rows per class, drawn in the one streamed pass (seeded).",
        "within": "[1, inf)"})
    skip_bad_records: bool = field(default=False, metadata={
        "help": "Skip malformed training records (counted, lines logged); false: stop at one."})
    cache: Literal["auto", "on", "off"] = field(default="auto", metadata={
        "help": "Arrow cache of the streamed rows and texts; auto: for files >= 64 MB or sampled."})
    cache_dir: str | None = field(default=None, metadata={
        "help": "Data and token caches; null: `<output_dir>/.cache` under the project root."})
    csv_delimiter: str | None = field(default=None, metadata={
        "help": "CSV field separator; null: detected (comma, semicolon, tab, pipe)."})
    encoding: str | None = field(default=None, metadata={
        "help": "File encoding; null: UTF-8 (with or without BOM), else detected and said."})

    def check(self) -> None:
        if self.labels is not None:
            self.labels = [label_str(label) for label in self.labels]
        if self.positive_label is not None:
            self.positive_label = label_str(self.positive_label)
        if self.label_map is not None:
            self.label_map = {label_str(k): label_str(v) for k, v in self.label_map.items()}
        if not self.text_columns:
            raise KitError("`competition.text_columns` is empty; name at least one column.")
        check_template(self.text_template, self.text_columns, "competition.text_template")
        metric = metric_name(self.metric)
        if self.task not in metric.tasks:
            fits = [name for name, m in METRIC_NAMES.items() if self.task in m.tasks]
            raise KitError(
                f"`competition.metric` {self.metric!r} is not defined for a {self.task} task "
                f"(only {', '.join(metric.tasks)}); use one of {', '.join(fits)}."
            )
        if self.labels is not None and len(set(self.labels)) < len(self.labels):
            raise KitError(f"`competition.labels` {self.labels} lists a class twice.")
        if self.ordinal and (self.task != "multiclass" or not self.labels):
            raise KitError(
                "`competition.ordinal: true` decodes ordered grades: it needs `competition.task: "
                "multiclass` and `competition.labels` listed lowest first (e.g. [1, 2, 3, 4, 5]; "
                f"the data's own order would sort '10' before '2'); got task {self.task!r}, "
                f"labels {self.labels}.")
        if self.task == "binary" and self.labels is not None and len(self.labels) != 2:
            raise KitError(
                f"task is binary but `competition.labels` has {len(self.labels)} entries: "
                f"{self.labels}. List exactly two, negative first."
            )
        if self.positive_label is not None and self.labels:
            if self.positive_label not in self.labels:
                raise KitError(
                    f"`competition.positive_label` {self.positive_label!r} is not in "
                    f"`competition.labels` {self.labels}."
                )
            if self.task == "binary" and self.positive_label != self.labels[1]:
                raise KitError(
                    f"`competition.positive_label` {self.positive_label!r} comes first in "
                    f"`competition.labels` {self.labels}, which lists the negative class first. "
                    f"List them as {self.labels[::-1]}."
                )


@dataclass
class ValidationParams(Section):
    """The hold-out split that every model is scored on."""

    section: ClassVar[str] = "validation"

    size: float = field(default=0.2, metadata={
        "help": "Share of the training rows held out for validation.", "within": "(0, 1)"})
    stratify: bool = field(default=True, metadata={
        "help": "Keep the class shares equal on both sides (single-label tasks)."})
    group_column: str | None = field(default=None, metadata={
        "help": "Rows sharing a value here stay on one side (several answers to one problem)."})


@dataclass
class EdaParams(Section):
    """What the EDA notebook measures."""

    section: ClassVar[str] = "eda"

    tokenizer: str | None = field(default=None, metadata={
        "help": "Tokenizer for text lengths; null: the transformer's if trained, else words."})
    max_length_percentile: float = field(default=99.0, metadata={
        "help": "Token-length percentile that suggests transformer.max_length.",
        "within": "(0, 100]"})
    examples_per_class: int = field(default=3, metadata={
        "help": "Example texts shown per class.", "within": "[0, inf)"})


@dataclass
class ThresholdParams(Section):
    """How 03_thresholds turns probabilities into the decision rule that 04_submit applies."""

    section: ClassVar[str] = "thresholds"

    enabled: bool = field(default=True, metadata={
        "help": "Fit a decision rule on validation; false: argmax, or 0.5 per label."})
    bootstrap: int = field(default=200, metadata={
        "help": "Bootstrap resamples behind every tuned rule's keep-or-default test.",
        "within": "[20, inf)"})
    calibrate: bool = field(default=True, metadata={
        "help": "Temperature scaling fitted on validation."})
    multiclass_bias: bool = field(default=False, metadata={
        "help": "Multiclass: per-class log-prior offsets, kept if they help on unseen rows."})
    require_label: bool = field(default=True, metadata={
        "help": "Multilabel: every row gets at least its most likely label."})


@dataclass
class SubmitParams(Section):
    """Building and sending the submission."""

    section: ClassVar[str] = "submit"

    enabled: bool = field(default=False, metadata={
        "help": "Really submit; false: a dry run that prints the kaggle command."})
    message: str | None = field(default=None, metadata={
        "help": "Submission message; null: run name, model and validation score."})
    model: str = field(default="best", metadata={
        "help": "Whose predictions: best on validation, or a name from models."})
    kernel: str | None = field(default=None, metadata={
        "help": "Code competitions: the notebook, as `<owner>/<notebook-slug>`."})
    kernel_version: int | None = field(default=None, metadata={
        "help": "Code competitions: the version number `kaggle kernels push` printed."})
    prediction: Literal["label", "probability"] = field(default="label", metadata={
        "help": "Submit decided labels, or probabilities (one column per class)."})


@dataclass
class TrackingParams(Section):
    """Experiment tracking with MLflow (kit.tracking): params, curves, artifacts, the best model."""

    section: ClassVar[str] = "tracking"

    enabled: bool | Literal["auto"] = field(default="auto", metadata={
        "help": "auto: track when mlflow is installed; true: require mlflow; false: never track."})
    uri: str | None = field(default=None, metadata={
        "help": "Tracking URI; null: $MLFLOW_TRACKING_URI, else sqlite at output_dir/mlflow.db."})
    experiment: str | None = field(default=None, metadata={
        "help": "MLflow experiment name; null: the competition slug."})
    register_model: bool = field(default=True, metadata={
        "help": "Register the submitted model under the slug when its validation is the best."})
    timeout_seconds: float = field(default=5.0, metadata={
        "help": "Wait this long for a tracking server; unreachable: warn once, run untracked.",
        "within": "(0, inf)"})


@dataclass
class Params(Section):
    """Everything one run needs; written resolved to the run folder as params.yaml."""

    name: str = field(default="demo", metadata={
        "help": "Run folder name under output_dir (run_all.sh --name overrides it)."})
    seed: int = field(default=42, metadata={
        "help": "Drives the split, the models and the bootstrap.", "within": "[0, inf)"})
    output_dir: str = field(default="outputs", metadata={
        "help": "Where run folders go (relative paths: from the project root)."})
    models: list[ModelKind] = field(default_factory=lambda: ["tfidf"], metadata={
        "help": "Models to train, in order: tfidf, transformer, student (after its teacher)."})
    competition: CompetitionParams = field(default_factory=CompetitionParams)
    validation: ValidationParams = field(default_factory=ValidationParams)
    cv: CvParams = field(default_factory=CvParams)
    eda: EdaParams = field(default_factory=EdaParams)
    tfidf: TfidfParams = field(default_factory=TfidfParams)
    transformer: TransformerParams = field(default_factory=TransformerParams)
    distill: DistillParams = field(default_factory=DistillParams)
    pseudo: PseudoParams = field(default_factory=PseudoParams)
    thresholds: ThresholdParams = field(default_factory=ThresholdParams)
    submit: SubmitParams = field(default_factory=SubmitParams)
    ensemble: EnsembleParams = field(default_factory=EnsembleParams)
    search: SearchParams = field(default_factory=SearchParams)
    tracking: TrackingParams = field(default_factory=TrackingParams)
    platform: PlatformParams = field(default_factory=PlatformParams)
    kaggle: KaggleParams = field(default_factory=KaggleParams)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict, ready for YAML."""
        return dataclasses.asdict(self)

    def model_choices(self) -> list[str]:
        """The models this run makes: `models` (and their refits with `cv.refit`), then each
        blend whose section is enabled."""
        return [*run_models(self.models, self.cv),
                *(name for name, section in BLEND_SECTIONS.items()
                  if getattr(self, section).enabled)]

    def check(self) -> None:
        if not self.models and not self.ensemble.runs:
            raise KitError("`models` is empty; list at least one, e.g. [tfidf] (an ensemble "
                           "of other runs only: `ensemble.runs` with `ensemble.enabled: true`).")
        if self.ensemble.runs and not self.ensemble.enabled:
            raise KitError("`ensemble.runs` is set but `ensemble.enabled` is false; enable the "
                           "ensemble or remove `ensemble.runs`.")
        if len(set(self.models)) < len(self.models):
            raise KitError(f"`models` is {self.models}; list each model once.")
        if not self.name or "/" in self.name:
            raise KitError(f"`name` is {self.name!r}; use a folder-safe name.")
        trained, choices = run_models(self.models, self.cv), self.model_choices()
        blends = choices[len(trained):]  # model_choices lists the trained models first
        if self.submit.model != "best" and self.submit.model not in choices:
            raise KitError(
                f"`submit.model` is {self.submit.model!r}, not one of `models` {self.models}"
                + (f" (with cv.refit: {trained})" if self.cv.refit
                   else "") + (f" or {', '.join(f'`{b}`' for b in blends)}." if blends else ".")
            )
        comp = self.competition
        if (self.thresholds.enabled and self.thresholds.multiclass_bias
                and comp.task == "multiclass" and metric_name(comp.metric).needs != "labels"):
            raise KitError(
                f"`thresholds.multiclass_bias` shifts decided labels, but `competition.metric` "
                f"{comp.metric!r} scores probabilities. Set thresholds.multiclass_bias: false."
            )
        if "transformer" in self.models:
            check_template(self.transformer.prompt_template, comp.text_columns,
                           "transformer.prompt_template")
            check_optimizer(self.transformer.optimizer)
            check_views_against(self.transformer, comp.text_columns, comp.labels, self.cv.folds)
        check_distill(self)  # the student's teacher, settings and pseudo-labels
        # 04_submit builds this kaggle command, even for a dry run; checking its values now refuses
        # a bad slug, kernel or kernel version with the submit step's own message.
        check_submission(comp.slug, self.submit.message or self.name, self.submit.kernel,
                         self.submit.kernel_version)
