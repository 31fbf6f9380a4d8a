"""Decoder LLMs as text classifiers: LoRA or 4-/8-bit QLoRA sequence classification (peft, unsloth).

`load_lora_classifier` turns a causal LM checkpoint (Llama, Qwen2, Phi-3, Gemma, Mistral, ...) into
`AutoModelForSequenceClassification` + LoRA adapters, closing the traps users of this stack hit:

- The classification head's real module name is read from the model (`score` on decoders,
  `classifier` on encoders) and put in `modules_to_save`, so it is trained, saved in every
  checkpoint and reloads trained instead of random (peft #876, transformers #26160, peft #577).
- "auto" target modules are the Linear layers of the loaded backbone, so Phi-3's fused
  `qkv_proj`/`gate_up_proj` and Llama's `q_proj`... are both right without a table.
- A missing pad token is set on the tokenizer AND `model.config.pad_token_id` (transformers
  #34055); `load_exported` does the same on reload. Padding is on the right: since PR #35911
  (early 2025) transformers pools the last non-pad token, right for either side, and older
  versions were right only for right padding (#35909). When pad == eos, an eos inside a text
  only counts as padding if it is the last token, which is then skipped by the pooling.
- Trainable parameters (LoRA + head) are float32 (kit.models.llm.precision: transformers #30559).
- bf16 only on compute capability >= 8.0 (a T4 claims bf16 through emulation); fp16 on T4/P100,
  float32 on CPU. bitsandbytes >= 0.50 quantizes on CPU too, so the 4-bit path is tested here.
- unsloth is used only when installed (checked without importing it) on a GPU of capability >= 7.0;
  on a CPU or a P100 it is never imported (it fails there: unsloth #813, #1355).

The backend, target modules, memory estimate and peak go to the optional `report` dict.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kit.config.params import TransformerParams
from kit.core.model_source import resolve_model
from kit.errors import KitError
from kit.models.hardware import HardwareProfile, model_device_map
from kit.models.hf.data import set_truncation_side
from kit.models.llm import memory_fit, memory_plan
from kit.models.llm.anatomy import (
    classification_head_names,
    derive_target_modules,
    unwrap_peft,
)
from kit.models.llm.backend import (
    FP16_UNSAFE_MODEL_TYPES,
    choose_backend,
    compute_dtype,
    is_gpu,
    quantization_config,
    resolve_optimizer,
)
from kit.models.llm.precision import (
    cast_head_input,
    keep_cpu_4bit_layout,
    trainable_to_float32,
    use_compute_dtype,
)

log = logging.getLogger(__name__)

__all__ = [
    "cast_head_input",
    "choose_backend",
    "classification_head_names",
    "compute_dtype",
    "derive_target_modules",
    "ensure_pad_token",
    "keep_cpu_4bit_layout",
    "load_base_classifier",
    "load_lora_classifier",
    "plan_memory",
    "quantization_config",
    "read_config",
    "resolve_model_path",
    "resolve_optimizer",
    "trainable_to_float32",
    "unwrap_peft",
    "use_compute_dtype",
]

PROBLEM_TYPES = {
    "binary": "single_label_classification",
    "multiclass": "single_label_classification",
    "multilabel": "multi_label_classification",
}


def _notice(message: str, report: dict[str, Any] | None) -> None:
    """One line for the person running the notebook, and the same line in the report."""
    log.info(message)
    if report is not None:
        report.setdefault("notices", []).append(message)


def _is_local(path: str) -> bool:
    """Load a local folder without ever asking a hub; a hub id (online runs only) may download."""
    return Path(path).is_dir()


def read_config(path: str, **overrides: Any) -> Any:
    """The model's config (local folders never reach a hub), or a KitError saying what to fix."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(path, local_files_only=_is_local(path), **overrides)
    except (OSError, ValueError) as err:  # ValueError: a local folder without config.json
        raise KitError(
            f"transformer.model {path!r} is not a model folder (no config.json there). Fix: point "
            "it at a folder with config.json + weights (on Kaggle: an attached input dataset), or "
            "use a packaged alias such as 'smollm2-135m'."
        ) from err


def resolve_model_path(name: str) -> str:
    """A local folder for `transformer.model` (aliases, Kaggle inputs: kit.core.model_source)."""
    return str(resolve_model(name))


def ensure_pad_token(tokenizer: Any, model: nn.Module | None = None) -> str:
    """Give the tokenizer a pad token (eos, else unk) and copy its id to `model.config`.

    Batches > 1 fail on `model.config.pad_token_id`, not the tokenizer's (transformers #34055), so
    both are set, here and on every reload. Padding goes on the right (see the module docstring).
    """
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise KitError(
                f"The tokenizer of {getattr(tokenizer, 'name_or_path', '?')} has no pad, eos or "
                "unk token to pad with. Fix: use a checkpoint whose tokenizer defines eos_token."
            )
        tokenizer.pad_token = fallback
    tokenizer.padding_side = "right"
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer.pad_token


def plan_memory(
    cfg: TransformerParams, path: str, num_labels: int, profile: HardwareProfile, report: dict
) -> None:
    """Estimate training memory before loading; on a GPU, stop early if it won't fit.

    kit.models.llm.memory_plan estimates, kit.models.llm.memory_fit decides. QLoRA always
    checkpoints gradients here, so the plan does too. The estimate goes to `report`.
    """
    if cfg.max_length is None:
        if is_gpu(profile):
            _notice(
                "memory not planned before loading: transformer.max_length is not set (set it, "
                "or pass the length derived from the data)",
                report,
            )
        return
    planned = cfg
    if cfg.lora.quantization != "none":
        planned = dataclasses.replace(cfg, gradient_checkpointing=True)
    config = read_config(path)
    estimate = memory_fit.plan_from_params(planned, config, profile, num_labels=num_labels)
    report["memory_estimate"] = estimate.to_dict()
    report["memory_estimate_gb"] = estimate.total_gb
    if is_gpu(profile):
        budget = cfg.memory_budget_gb or profile.memory_gb
        memory_fit.check_fits(estimate, budget, context=f"transformer.model {cfg.model!r}")


def load_base_classifier(
    path: str,
    num_labels: int,
    task: str,
    label_names: list[str],
    dtype: torch.dtype,
    quant: Any | None = None,
    device_map: Any | None = None,
    new_head_ok: bool = True,
) -> nn.Module:
    """`AutoModelForSequenceClassification` with label maps, problem type and quantization set.

    A local folder is loaded with `local_files_only`, so an internet-off notebook never asks a hub.
    `new_head_ok`: a checkpoint whose head has another number of labels gets a fresh head
    (training); False makes that an error (reloading a trained classifier).
    """
    from transformers import AutoModelForSequenceClassification

    if len(label_names) != num_labels:
        raise KitError(
            f"{len(label_names)} label names {label_names} for num_labels={num_labels}. "
            "Fix: pass one name per output of the classifier."
        )
    if task not in PROBLEM_TYPES:
        raise KitError(f"task is {task!r}; use one of {', '.join(PROBLEM_TYPES)}.")
    config = read_config(
        path,
        num_labels=num_labels,
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
        problem_type=PROBLEM_TYPES[task],
    )
    config.use_cache = False  # no generation here; the cache only costs memory in training
    kwargs: dict[str, Any] = {
        "config": config,
        "dtype": dtype,
        "local_files_only": _is_local(path),
        "ignore_mismatched_sizes": new_head_ok,
    }
    if quant is not None:
        kwargs["quantization_config"] = quant
    if device_map is not None:
        kwargs["device_map"] = device_map
    model = AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
    if quant is not None:
        use_compute_dtype(model, quant)
    return model


def load_lora_classifier(
    cfg: TransformerParams,
    num_labels: int,
    task: str,
    label_names: list[str],
    profile: HardwareProfile,
    report: dict[str, Any] | None = None,
) -> tuple[nn.Module, Any]:
    """A decoder LLM (or encoder) as a LoRA / QLoRA sequence classifier, and its tokenizer.

    `cfg.model` is a local folder or an alias resolved by kit.core.model_source. `profile` is the
    kit.models.hardware profile (kind, device, capability). `report`, when given, receives the
    backend and why, target modules, head names, dtypes, parameter counts, memory estimate and peak.
    """
    report = {} if report is None else report
    lora = cfg.lora
    backend, reason = choose_backend(lora.unsloth, profile)
    report.update(backend=backend, backend_reason=reason)
    if backend == "peft" and lora.unsloth == "auto":  # asked for where possible: say why not
        _notice(reason, report)
    path = resolve_model_path(cfg.model)
    report["model_path"] = path
    plan_memory(cfg, path, num_labels, profile, report)

    model_type = read_config(path).model_type
    dtype = compute_dtype(profile, model_type)
    report["compute_dtype"] = str(dtype).replace("torch.", "")
    if model_type in FP16_UNSAFE_MODEL_TYPES and dtype == torch.float32 and is_gpu(profile):
        _notice(f"{model_type} overflows fp16 (transformers #37226): computing in float32", report)

    if backend == "unsloth":
        model, tokenizer = _load_with_unsloth(
            cfg, path, num_labels, task, label_names, dtype, report
        )
    else:
        model, tokenizer = _load_with_peft(
            cfg, path, num_labels, task, label_names, profile, dtype, report
        )

    trainable = trainable_to_float32(model)
    cast_head_input(model, report["head_modules"])
    total = sum(p.numel() for p in model.parameters())
    report.update(
        trainable_params=trainable,
        total_params=total,
        pad_token=tokenizer.pad_token,
        padding_side=tokenizer.padding_side,
        memory_after_load_gb=memory_plan.measured_peak_gb(profile.device),
    )
    optim, notice = resolve_optimizer(cfg.optimizer, profile)
    report["optimizer"] = optim
    if notice:
        _notice(notice, report)
    return model, tokenizer


def _load_tokenizer(path: str, cfg: TransformerParams) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=_is_local(path))
    set_truncation_side(tokenizer, cfg.truncation_side)
    return tokenizer


def _lora_config(cfg: TransformerParams, targets: str | list[str], heads: list[str]) -> Any:
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=targets,
        modules_to_save=list(heads),  # a fresh list: never `lst.append(...)`, which is None
        bias="none",
    )


def _load_with_peft(
    cfg: TransformerParams,
    path: str,
    num_labels: int,
    task: str,
    label_names: list[str],
    profile: HardwareProfile,
    dtype: torch.dtype,
    report: dict[str, Any],
) -> tuple[nn.Module, Any]:
    from peft import get_peft_model, prepare_model_for_kbit_training

    quant = quantization_config(cfg, profile)
    # Placed at load, on one GPU deliberately (4-bit + DataParallel breaks; kit.models.hardware).
    device_map = model_device_map(profile)
    model = load_base_classifier(path, num_labels, task, label_names, dtype, quant, device_map)
    tokenizer = _load_tokenizer(path, cfg)
    ensure_pad_token(tokenizer, model)
    report["quantization"] = cfg.lora.quantization
    if quant is not None:
        keep_cpu_4bit_layout(model)
        # Casts the non-quantized weights to float32 and makes inputs require grad so gradient
        # checkpointing (on: QLoRA exists to save memory) reaches the adapters.
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=True,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    heads = classification_head_names(model)
    targets = derive_target_modules(model, cfg.lora.target_modules)
    report.update(head_modules=heads, target_modules=targets)
    model = get_peft_model(model, _lora_config(cfg, targets, heads))
    _check_head_saved(model, heads)
    return model, tokenizer


def _check_head_saved(model: nn.Module, heads: list[str]) -> None:
    """Fail now, not after hours of training, if the head would not be saved with the adapters."""
    saved = set(model.peft_config[model.active_adapter].modules_to_save or [])
    missing = [h for h in heads if h not in saved]
    if missing:
        raise KitError(
            f"The classification head {missing} is not in peft's modules_to_save {sorted(saved)}: "
            "it would reload random. This is a kit bug; please report it with the model name."
        )


def _load_with_unsloth(
    cfg: TransformerParams,
    path: str,
    num_labels: int,
    task: str,
    label_names: list[str],
    dtype: torch.dtype,
    report: dict[str, Any],
) -> tuple[nn.Module, Any]:
    """unsloth's FastModel with `auto_model=AutoModelForSequenceClassification` (GPU >= sm_70 only).

    unsloth's fast kernels were written for causal LMs; since 2025 `FastModel.from_pretrained`
    accepts `auto_model=AutoModelForSequenceClassification` (plus num_labels/id2label/label2id) and
    `FastModel.get_peft_model(task_type="SEQ_CLS", modules_to_save=[...])`, which keeps the decoder
    patches and a plain transformers head. The kit then applies the same pad-token, head and
    float32 rules as on the peft path, so checkpoints and exports are ordinary peft adapters.
    Never called on CPU or Pascal: `choose_backend` decides first; only then is unsloth imported.
    """
    from transformers import AutoModelForSequenceClassification
    from unsloth import FastModel  # the only unsloth import in the kit

    quant = cfg.lora.quantization
    model, tokenizer = FastModel.from_pretrained(
        model_name=path,
        auto_model=AutoModelForSequenceClassification,
        num_labels=num_labels,
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
        problem_type=PROBLEM_TYPES[task],
        max_seq_length=cfg.max_length or 2048,
        dtype=dtype,
        load_in_4bit=quant == "4bit",
        load_in_8bit=quant == "8bit",
        full_finetuning=False,
        local_files_only=_is_local(path),
    )
    set_truncation_side(tokenizer, cfg.truncation_side)
    ensure_pad_token(tokenizer, model)
    heads = classification_head_names(model)
    targets = derive_target_modules(model, cfg.lora.target_modules)
    report.update(head_modules=heads, target_modules=targets, quantization=quant)
    model = FastModel.get_peft_model(
        model,
        r=cfg.lora.r,
        target_modules=targets,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        bias="none",
        use_gradient_checkpointing="unsloth",
        modules_to_save=list(heads),
        task_type="SEQ_CLS",
    )
    _check_head_saved(model, heads)
    return model, tokenizer
