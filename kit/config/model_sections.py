"""The model sections of the params schema: the TF-IDF baseline and the transformer (with LoRA).

Part of the schema (kit/config/schema.py re-exports them; see its docstring for the field
conventions): each key's doc, range and the rules between keys of a model's section.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from kit.config.section import Label, Section, check_seeds
from kit.config.views import View, check_view_keys
from kit.errors import KitError

__all__ = ["LoraParams", "TfidfParams", "TransformerParams"]


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
    predict_views: list[View] | None = field(default=None, metadata={
        "help": "Views averaged at prediction: right, left, head_tail, swap; null: training's."})
    swap_columns: list[str] | None = field(default=None, metadata={
        "help": "swap view: the two text columns exchanged; null: the two text_columns."})
    swap_labels: dict[Label, Label] | None = field(default=None, metadata={
        "help": "swap view: classes that trade places ({winner_a: winner_b}); null: none."})
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
    keep_checkpoints: bool = field(default=False, metadata={
        "help": "Keep a finished model's (fold's) checkpoints; false: deleted, its export kept."})
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
    seeds: list[int] | None = field(default=None, metadata={
        "help": "A fit per seed for each fold (or split), probabilities averaged; null: `seed`."})
    merge_folds: bool = field(default=False, metadata={
        "help": "k-fold LoRA: end 02 with the fold adapters merged into one model (kit export)."})
    lora: LoraParams = field(default_factory=LoraParams)

    def check(self) -> None:
        check_seeds(self.seeds, "transformer.seeds")
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
        check_view_keys(self)  # kit.config.views

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

