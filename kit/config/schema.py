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
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from kit.config.compete import CvParams, EnsembleParams, SearchParams
from kit.config.delivery import KaggleParams, PlatformParams
from kit.config.section import (
    Label,
    ModelKind,
    Section,
    Task,
    check_optimizer,
    check_template,
)
from kit.errors import KitError
from kit.kaggle import cli as kaggle_cli

__all__ = [  # the sections defined elsewhere, re-exported: this module is the whole schema
    "CvParams",
    "EnsembleParams",
    "KaggleParams",
    "PlatformParams",
    "SearchParams",
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
        from kit.data.competition import _label_str  # it imports this module: not at the top
        from kit.evaluation.metrics import METRICS, get_metric  # the registry (imports sklearn)

        if self.labels is not None:
            self.labels = [_label_str(label) for label in self.labels]
        if self.positive_label is not None:
            self.positive_label = _label_str(self.positive_label)
        if self.label_map is not None:
            self.label_map = {_label_str(k): _label_str(v) for k, v in self.label_map.items()}
        if not self.text_columns:
            raise KitError("`competition.text_columns` is empty; name at least one column.")
        check_template(self.text_template, self.text_columns, "competition.text_template")
        metric = get_metric(self.metric)
        if self.task not in metric.tasks:
            fits = [name for name, m in METRICS.items() if self.task in m.tasks]
            raise KitError(
                f"`competition.metric` {self.metric!r} is not defined for a {self.task} task "
                f"(only {', '.join(metric.tasks)}); use one of {', '.join(fits)}."
            )
        if self.labels is not None and len(set(self.labels)) < len(self.labels):
            raise KitError(f"`competition.labels` {self.labels} lists a class twice.")
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
class TfidfParams(Section):
    """The TF-IDF + logistic-regression baseline."""

    section: ClassVar[str] = "tfidf"

    word_ngram_max: int = field(default=2, metadata={
        "help": "Word n-grams from 1 to this.", "within": "[1, inf)"})
    char_ngrams: bool = field(default=True, metadata={
        "help": "Add character 2-5 grams (robust on short and noisy text)."})
    max_features: int = field(default=200_000, metadata={
        "help": "Vocabulary size kept.", "within": "[1, inf)"})
    min_df: int = field(default=1, metadata={
        "help": "Drop terms found in fewer rows than this.", "within": "[1, inf)"})
    sublinear_tf: bool = field(default=True, metadata={
        "help": "1 + log(tf) instead of raw term counts."})
    C: float = field(default=4.0, metadata={
        "help": "Inverse regularisation strength of the logistic regression.",
        "within": "(0, inf)"})
    class_weight: Literal["balanced", "none"] = field(default="balanced", metadata={
        "help": "Reweight classes by inverse frequency, or not."})
    max_iter: int = field(default=2000, metadata={
        "help": "Solver iterations at most.", "within": "[1, inf)"})


@dataclass
class LoraParams(Section):
    """LoRA / QLoRA adapters (decoder LLMs as classifiers, or encoders)."""

    section: ClassVar[str] = "transformer.lora"

    enabled: bool = field(default=False, metadata={
        "help": "Train adapters (and the head) instead of every weight."})
    r: int = field(default=8, metadata={"help": "Adapter rank.", "within": "[1, inf)"})
    alpha: int = field(default=16, metadata={
        "help": "Adapter scale numerator (scale = alpha / r).", "within": "[1, inf)"})
    dropout: float = field(default=0.05, metadata={
        "help": "Dropout on the adapter inputs.", "within": "[0, 1)"})
    target_modules: str | list[str] = field(default="auto", metadata={
        "help": "auto (derived from the loaded model), all-linear, or a list of module names."})
    quantization: Literal["none", "4bit", "8bit"] = field(default="none", metadata={
        "help": "Load the base weights quantized (QLoRA; needs bitsandbytes)."})
    quant_type: Literal["nf4", "fp4"] = field(default="nf4", metadata={
        "help": "The 4-bit data type."})
    double_quant: bool = field(default=True, metadata={
        "help": "Quantize the 4-bit scales too (about 0.4 bit per parameter less)."})
    unsloth: Literal["auto", "never", "require"] = field(default="auto", metadata={
        "help": "Use unsloth where it runs (auto), never, or fail without it (require)."})
    merge_on_export: bool = field(default=False, metadata={
        "help": "Merge the adapters into the exported weights."})

    def check(self) -> None:
        if self.quantization != "none" and not self.enabled:
            raise KitError(
                f"Quantization {self.quantization!r} needs LoRA adapters: quantized weights "
                "cannot be trained. Set `transformer.lora.enabled: true` or "
                "`transformer.lora.quantization: none`."
            )


@dataclass
class TransformerParams(Section):
    """Fine-tuning a Hugging Face model (encoder, or decoder LLM with `lora`)."""

    section: ClassVar[str] = "transformer"

    model: str = field(default="minilm", metadata={
        "help": "Local or Kaggle input folder, hub id (online), or alias minilm, smollm2-135m."})
    max_length: int | None = field(default=None, metadata={
        "help": "Tokens per text; null: the EDA's percentile of token lengths.",
        "within": "[1, inf)"})
    truncation_side: Literal["right", "left", "head_tail"] = field(default="right", metadata={
        "help": "Which end of a long text is cut; head_tail keeps its start and its end."})
    head_tokens: int | None = field(default=None, metadata={
        "help": "head_tail: tokens kept from the start, the rest from the end; null: max_length/4.",
        "within": "[1, inf)"})
    prompt_template: str | None = field(default=None, metadata={
        "help": "Overrides competition.text_template for this model."})
    epochs: float = field(default=3.0, metadata={
        "help": "Passes over the training rows (ignored when max_steps > 0).",
        "within": "[0, inf)"})
    max_steps: int = field(default=-1, metadata={
        "help": "> 0: train this many optimizer steps instead of epochs (huge data sets)."})
    batch_size: int = field(default=32, metadata={
        "help": "Training rows per device step.", "within": "[1, inf)"})
    eval_batch_size: int = field(default=64, metadata={
        "help": "Rows per prediction step.", "within": "[1, inf)"})
    grad_accum: int = field(default=1, metadata={
        "help": "Device steps per optimizer step.", "within": "[1, inf)"})
    lr: float = field(default=5e-5, metadata={"help": "Peak learning rate.", "within": "(0, inf)"})
    scheduler: Literal[
        "linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts"
    ] = field(default="linear", metadata={"help": "Learning-rate schedule after the warmup."})
    warmup_ratio: float = field(default=0.06, metadata={
        "help": "Share of the steps that warm the learning rate up.", "within": "[0, 1)"})
    weight_decay: float = field(default=0.01, metadata={
        "help": "AdamW weight decay.", "within": "[0, inf)"})
    optimizer: str = field(default="adamw_torch_fused", metadata={
        "help": "A Trainer `optim`: adamw_torch_fused (one kernel), adamw_torch, adamw_8bit, ..."})
    eval_steps: int = field(default=100, metadata={
        "help": "Score validation every this many optimizer steps.", "within": "[1, inf)"})
    save_steps: int = field(default=100, metadata={
        "help": "Checkpoint every this many steps: a multiple of eval_steps.",
        "within": "[1, inf)"})
    save_total_limit: int = field(default=2, metadata={
        "help": "Last checkpoints kept; the best is kept as well.", "within": "[1, inf)"})
    early_stopping_patience: int = field(default=0, metadata={
        "help": "Evaluations without improvement before stopping; 0: never stop early.",
        "within": "[0, inf)"})
    class_weights: Literal["balanced", "sqrt", "none"] = field(default="sqrt", metadata={
        "help": "Loss weights by class frequency (sqrt: the milder square root)."})
    label_smoothing: float = field(default=0.0, metadata={
        "help": "Label smoothing of the cross-entropy.", "within": "[0, 1)"})
    llrd: float | None = field(default=None, metadata={
        "help": "Layer-wise lr decay: head, top layer at lr, each layer below x llrd; null: off.",
        "within": "(0, 1]"})
    ema_decay: float | None = field(default=None, metadata={
        "help": "Evaluate and predict with a moving average of weights (e.g. 0.999); null: off.",
        "within": "(0, 1)"})
    adversarial: Literal["none", "fgm", "awp"] = field(default="none", metadata={
        "help": "Adversarial training: fgm perturbs the word embeddings, awp the weights."})
    adversarial_eps: float | None = field(default=None, metadata={
        "help": "Perturbation size; null: 1.0 for fgm (embedding step), 0.01 for awp (relative).",
        "within": "(0, inf)"})
    adversarial_start_epoch: float = field(default=1.0, metadata={
        "help": "Epoch from which the adversarial step runs (the first epoch trains clean).",
        "within": "[0, inf)"})
    multi_sample_dropout: int = field(default=1, metadata={
        "help": "Training logits averaged over this many dropout masks of the head; 1: plain head.",
        "within": "[1, inf)"})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "Recompute activations: less memory, about 30 % slower."})
    checkpoint_dir: str | None = field(default=None, metadata={
        "help": "Persistent checkpoint folder (e.g. Google Drive); null: the run folder."})
    distributed: Literal["auto", "off", "ddp"] = field(default="auto", metadata={
        "help": "auto: DDP, one process per GPU, when 2+ GPUs are visible; off; ddp: insist."})
    checkpoint_fsync: bool = field(default=True, metadata={
        "help": "fsync each checkpoint before it counts (survives a crash, not only a kill)."})
    disk_budget_gb: float = field(default=15.0, metadata={
        "help": "Checkpoints beyond this size are rotated out.", "within": "(0, inf)"})
    time_budget_minutes: float | None = field(default=None, metadata={
        "help": "Stop with a checkpoint before this; rerun to continue.", "within": "(0, inf)"})
    memory_budget_gb: float | None = field(default=None, metadata={
        "help": "GPU memory to plan for; null: the GPU's.", "within": "(0, inf)"})
    lora: LoraParams = field(default_factory=LoraParams)

    def check(self) -> None:
        # Every checkpoint needs a validation score so that the best one is known and kept, and
        # a run always has validation (validation.size lies in (0, 1)).
        if self.save_steps % self.eval_steps:
            save = self.eval_steps * max(1, round(self.save_steps / self.eval_steps))
            evaluate = math.gcd(self.save_steps, self.eval_steps)
            raise KitError(
                f"transformer.save_steps ({self.save_steps}) must be a multiple of eval_steps "
                f"({self.eval_steps}) so that every checkpoint has a validation score and the best "
                f"one can be kept; e.g. set save_steps: {save} (or eval_steps: {evaluate})."
            )
        if self.epochs <= 0 and self.max_steps <= 0:
            raise KitError("Set transformer.epochs > 0 or transformer.max_steps > 0.")
        self._check_training_options()

    def _check_training_options(self) -> None:
        """Rules of the winners' options (kit.models.hf.options): truncation, adversarial, heads."""
        if self.head_tokens is not None:
            if self.truncation_side != "head_tail":
                raise KitError(
                    f"transformer.head_tokens ({self.head_tokens}) only applies to "
                    f"truncation_side: head_tail, not {self.truncation_side!r}. Set "
                    "truncation_side: head_tail or head_tokens: null."
                )
            if self.max_length is not None and self.head_tokens >= self.max_length:
                raise KitError(
                    f"transformer.head_tokens ({self.head_tokens}) must be below max_length "
                    f"({self.max_length}) so that the end of a text is kept too; e.g. "
                    f"head_tokens: {max(1, self.max_length // 4)}."
                )
        if self.adversarial == "none":
            if self.adversarial_eps is not None:
                raise KitError(
                    f"transformer.adversarial_eps ({self.adversarial_eps:g}) is set but "
                    "adversarial is none. Set adversarial: fgm or awp, or adversarial_eps: null."
                )
        elif self.max_steps <= 0 and self.adversarial_start_epoch >= self.epochs:
            raise KitError(
                f"transformer.adversarial_start_epoch ({self.adversarial_start_epoch:g}) is not "
                f"below epochs ({self.epochs:g}): {self.adversarial} would never run. Lower it "
                "(0 perturbs from the first step)."
            )
        if self.lora.enabled and self.adversarial == "fgm":
            raise KitError(
                "transformer.adversarial: fgm perturbs the word embeddings along their gradient, "
                "and LoRA freezes them (no gradient). Use adversarial: awp with LoRA."
            )
        if self.lora.enabled and self.multi_sample_dropout > 1:
            raise KitError(
                "transformer.multi_sample_dropout applies to fully fine-tuned heads; with LoRA the "
                "head is saved by peft as is. Set multi_sample_dropout: 1 or lora.enabled: false."
            )
        if self.distributed == "ddp" and self.lora.enabled and self.lora.unsloth == "require":
            raise KitError(
                "transformer.distributed: ddp runs one process per GPU through accelerate, which "
                "unsloth's open-source build does not support; with lora.unsloth: require, set "
                "distributed: off (one GPU), or lora.unsloth: auto (peft under DDP)."
            )


@dataclass
class ThresholdParams(Section):
    """How 03_thresholds turns probabilities into the decision rule that 04_submit applies."""

    section: ClassVar[str] = "thresholds"

    enabled: bool = field(default=True, metadata={
        "help": "Fit a decision rule on validation; false: argmax, or 0.5 per label."})
    bootstrap: int = field(default=200, metadata={
        "help": "Resamples for the stability interval of a binary threshold.",
        "within": "[20, inf)"})
    calibrate: bool = field(default=True, metadata={
        "help": "Temperature scaling fitted on validation."})
    multiclass_bias: bool = field(default=False, metadata={
        "help": "Multiclass: per-class log-prior offsets fitted on validation (label metrics)."})
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
        "help": "Models to train, in order: tfidf, transformer."})
    competition: CompetitionParams = field(default_factory=CompetitionParams)
    validation: ValidationParams = field(default_factory=ValidationParams)
    cv: CvParams = field(default_factory=CvParams)
    eda: EdaParams = field(default_factory=EdaParams)
    tfidf: TfidfParams = field(default_factory=TfidfParams)
    transformer: TransformerParams = field(default_factory=TransformerParams)
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

    def check(self) -> None:
        from kit.evaluation.metrics import get_metric  # the metric registry (imports sklearn)

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
        choices = [*self.models, *(["ensemble"] if self.ensemble.enabled else [])]
        if self.submit.model != "best" and self.submit.model not in choices:
            raise KitError(
                f"`submit.model` is {self.submit.model!r}, not one of `models` {self.models}"
                + (" or `ensemble`." if self.ensemble.enabled else ".")
            )
        comp = self.competition
        if (self.thresholds.enabled and self.thresholds.multiclass_bias
                and comp.task == "multiclass" and get_metric(comp.metric).needs != "labels"):
            raise KitError(
                f"`thresholds.multiclass_bias` shifts decided labels, but `competition.metric` "
                f"{comp.metric!r} scores probabilities. Set thresholds.multiclass_bias: false."
            )
        if "transformer" in self.models:
            check_template(self.transformer.prompt_template, comp.text_columns,
                           "transformer.prompt_template")
            check_optimizer(self.transformer.optimizer)
        # 04_submit builds this kaggle command, even for a dry run; building it now refuses a bad
        # slug, kernel or kernel version with the submit step's own message.
        kaggle_cli.submit_command(comp.slug, "submission.csv", self.submit.message or self.name,
                                  self.submit.kernel, self.submit.kernel_version)
