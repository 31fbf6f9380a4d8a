"""The params schema: every section and key of a params file, with its type and default."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

Task = Literal["binary", "multiclass", "multilabel"]


@dataclass
class CompetitionParams:
    """Where the data is and what its columns mean."""

    slug: str = "trec-questions"
    data_dir: str | None = None  # explicit folder; else /kaggle/input/<slug>, data/<slug>, download
    train_file: str = "train.csv"  # .csv, .jsonl, .json.gz, .jsonl.gz (JSON lines are streamed)
    test_file: str = "test.csv"
    sample_submission_file: str = "sample_submission.csv"
    answer_key_file: str | None = "answer_key.csv"  # local scoring only (demo competitions)
    id_column: str = "id"
    text_columns: list[str] = field(default_factory=lambda: ["text"])
    # Python format string over the text columns, e.g. "Question: {question}\nAnswer: {answer}".
    # None joins the text columns with a blank line.
    text_template: str | None = None
    label_column: str = "label"
    task: Task = "multiclass"
    labels: list[str] | None = None  # declared classes; None: the sorted labels seen in train
    positive_label: str | None = None  # binary: which label is the positive class
    label_delimiter: str | None = None  # multilabel: labels in one string, e.g. " " or ","
    # Raw label -> class, exact match first, then the longest matching prefix ("q-fin." -> ...).
    label_map: dict[str, str] | None = None
    metric: str = "f1_micro"  # a name from kit.evaluation.metrics
    max_rows: int | None = None  # read only the first N training rows (quick experiments)
    csv_delimiter: str | None = None  # None: detected from the file ("," ";" tab "|")
    encoding: str | None = None  # None: UTF-8 (with or without BOM), else detected and said


@dataclass
class ValidationParams:
    """The hold-out split that every model is scored on."""

    size: float = 0.2
    stratify: bool = True
    # Rows sharing a value here stay on one side of the split (e.g. several answers to one problem).
    group_column: str | None = None


@dataclass
class EdaParams:
    """What the EDA notebook measures."""

    tokenizer: str | None = None  # None: the transformer's tokenizer, else a whitespace count
    max_length_percentile: float = 99.0
    examples_per_class: int = 3


@dataclass
class TfidfParams:
    """The TF-IDF + logistic-regression baseline."""

    word_ngram_max: int = 2
    char_ngrams: bool = True  # add character 2-5 grams (robust on short and noisy text)
    max_features: int = 200_000
    min_df: int = 1
    sublinear_tf: bool = True
    C: float = 4.0
    class_weight: Literal["balanced", "none"] = "balanced"
    max_iter: int = 2000


@dataclass
class LoraParams:
    """LoRA / QLoRA adapters (decoder LLMs as classifiers, or encoders)."""

    enabled: bool = False
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    # "auto": derived from the loaded model (q_proj/k_proj/... or fused qkv_proj); "all-linear";
    # or an explicit list of module names.
    target_modules: str | list[str] = "auto"
    quantization: Literal["none", "4bit", "8bit"] = "none"
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    unsloth: Literal["auto", "never", "require"] = "auto"
    merge_on_export: bool = False


@dataclass
class TransformerParams:
    """Fine-tuning a Hugging Face model (encoder, or decoder LLM with `lora`)."""

    # A local folder, a Kaggle input folder, a hub id (online only), or a packaged alias:
    # "minilm" (all-MiniLM-L6-v2) or "smollm2-135m" (SmolLM2-135M-Instruct).
    model: str = "minilm"
    max_length: int | None = None  # None: the EDA percentile of token lengths
    truncation_side: Literal["right", "left"] = "right"
    prompt_template: str | None = None  # overrides competition.text_template for this model
    epochs: float = 3.0
    max_steps: int = -1  # > 0: train by steps (million-row sets), epochs ignored
    batch_size: int = 32
    eval_batch_size: int = 64
    grad_accum: int = 1
    lr: float = 5e-5
    scheduler: Literal[
        "linear", "cosine", "constant", "constant_with_warmup", "cosine_with_restarts"
    ] = "linear"
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    optimizer: str = "adamw_torch"  # any Trainer `optim`, e.g. paged_adamw_32bit, adamw_8bit
    eval_steps: int = 100
    save_steps: int = 100
    save_total_limit: int = 2  # the last k checkpoints; the best is always kept as well
    early_stopping_patience: int = 0  # evaluations without improvement; 0: off
    class_weights: Literal["balanced", "sqrt", "none"] = "sqrt"
    label_smoothing: float = 0.0
    gradient_checkpointing: bool = False
    checkpoint_dir: str | None = None  # persistent folder (e.g. Google Drive); None: the run folder
    disk_budget_gb: float = 15.0
    time_budget_minutes: float | None = None  # stop gracefully with a checkpoint before this
    memory_budget_gb: float | None = None  # None: the GPU's memory
    lora: LoraParams = field(default_factory=LoraParams)


@dataclass
class ThresholdParams:
    """How 03_thresholds turns probabilities into the decision rule that 04_submit applies."""

    enabled: bool = True
    bootstrap: int = 200  # resamples for the stability interval of a binary threshold
    calibrate: bool = True  # temperature scaling fitted on validation
    multiclass_bias: bool = False  # fit per-class log-prior offsets on validation
    require_label: bool = True  # multilabel: every row gets at least its most likely label


@dataclass
class SubmitParams:
    """Building and sending the submission."""

    enabled: bool = False  # False: dry run, the kaggle command is printed, not run
    message: str | None = None  # None: "<run name> <model> val=<score>"
    model: str = "best"  # which trained model's predictions: "best" on validation, or a name
    kernel: str | None = None  # code competitions: owner/notebook-slug
    kernel_version: int | None = None
    prediction: Literal["label", "probability"] = "label"


@dataclass
class Params:
    """Everything one run needs; written resolved to the run folder as params.yaml."""

    name: str = "demo"
    seed: int = 42
    output_dir: str = "outputs"
    models: list[str] = field(default_factory=lambda: ["tfidf"])  # in order: tfidf, transformer
    competition: CompetitionParams = field(default_factory=CompetitionParams)
    validation: ValidationParams = field(default_factory=ValidationParams)
    eda: EdaParams = field(default_factory=EdaParams)
    tfidf: TfidfParams = field(default_factory=TfidfParams)
    transformer: TransformerParams = field(default_factory=TransformerParams)
    thresholds: ThresholdParams = field(default_factory=ThresholdParams)
    submit: SubmitParams = field(default_factory=SubmitParams)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict, ready for YAML."""
        return dataclasses.asdict(self)


MODEL_KINDS = ("tfidf", "transformer")
