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
- Trainable parameters (LoRA + head) are float32 even when the frozen base is fp16/bf16 or 4-bit,
  so fp16 autocast never unscales fp16 gradients (transformers #30559).
- bf16 only on compute capability >= 8.0 (a T4 claims bf16 through emulation); fp16 on T4/P100,
  float32 on CPU. bitsandbytes >= 0.50 quantizes on CPU too, so the 4-bit path is tested here.
- unsloth is used only when installed (checked without importing it) on a GPU of capability >= 7.0;
  on a CPU or a P100 it is never imported (it fails there: unsloth #813, #1355).

Which backend ran, the target modules, the memory estimate and peak are written to the optional
`report` dict, which the caller saves beside the run.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kit.config.params import TransformerParams
from kit.errors import KitError
from kit.models.hardware import HardwareProfile, model_device_map
from kit.models.hf.data import set_truncation_side
from kit.models.llm import memory_plan

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
]

# Families whose activations overflow fp16 (transformers #37226): on fp16-only GPUs they compute in
# float32 instead (slower, but right).
FP16_UNSAFE_MODEL_TYPES = ("gemma3", "gemma3_text")

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


def _is_gpu(profile: HardwareProfile) -> bool:
    return profile.device == "cuda"


def choose_backend(setting: str, profile: HardwareProfile) -> tuple[str, str]:
    """Pick "unsloth" or "peft" for `lora.unsloth` ("auto" | "never" | "require") on this hardware.

    unsloth needs an installed package (looked up with find_spec: importing it on a machine without
    a GPU fails) and a CUDA GPU of compute capability >= 7.0. "require" without them is an error;
    "auto" falls back to peft and says why.
    """
    if setting not in ("auto", "never", "require"):
        raise KitError(
            f"transformer.lora.unsloth is {setting!r}; use one of 'auto', 'never', 'require'."
        )
    if setting == "never":
        return "peft", "transformer.lora.unsloth is 'never'"
    cap = profile.capability
    if not _is_gpu(profile):
        why = "there is no CUDA GPU (unsloth needs one)"
    elif cap is None or tuple(cap) < (7, 0):
        why = f"the GPU is {profile.sm}; unsloth needs compute capability >= 7.0 (P100: sm_60)"
    elif importlib.util.find_spec("unsloth") is None:
        why = "unsloth is not installed (pip install 'compkit[unsloth]', holding the present torch)"
    else:
        return "unsloth", f"unsloth is installed and the GPU is {profile.sm} (>= sm_70)"
    if setting == "require":
        raise KitError(
            f"transformer.lora.unsloth is 'require' but {why}. Fix: set transformer.lora.unsloth "
            "to 'auto' (falls back to peft) or run on a T4/A100-class GPU with unsloth installed."
        )
    return "peft", f"unsloth not used: {why}; training with peft"


def compute_dtype(profile: HardwareProfile, model_type: str | None = None) -> torch.dtype:
    """The profile's dtype: bf16 only at capability >= 8.0, fp16 on T4/P100, float32 on CPU.

    kit.models.hardware decides by capability, never `torch.cuda.is_bf16_supported()` (True on a T4
    through emulation, pytorch #148322). Families that overflow fp16 (Gemma-3) get float32 instead.
    """
    dtype = getattr(torch, profile.compute_dtype)
    if dtype == torch.float16 and model_type in FP16_UNSAFE_MODEL_TYPES:
        return torch.float32
    return dtype


def quantization_config(cfg: TransformerParams, profile: HardwareProfile) -> Any | None:
    """The `BitsAndBytesConfig` for `lora.quantization` ("none": None); compute dtype by GPU."""
    lora = cfg.lora
    if lora.quantization == "none":
        return None
    if importlib.util.find_spec("bitsandbytes") is None:
        raise KitError(
            f"transformer.lora.quantization is {lora.quantization!r} but bitsandbytes is not "
            "installed. Fix: pip install 'compkit[qlora]', or set "
            "transformer.lora.quantization: none."
        )
    from transformers import BitsAndBytesConfig

    if lora.quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=lora.quant_type,
        bnb_4bit_use_double_quant=lora.double_quant,
        bnb_4bit_compute_dtype=compute_dtype(profile),
    )


def resolve_optimizer(name: str, profile: HardwareProfile) -> tuple[str, str | None]:
    """The Trainer `optim` to use for `name` here, and a notice when it differs or does less.

    bitsandbytes 0.50 runs `adamw_8bit` and `paged_adamw_*` on CPU (paged ones page only on CUDA);
    without bitsandbytes they fall back to `adamw_torch`.
    """
    needs_bnb = "8bit" in name or name.startswith("paged_") or "bnb" in name
    if needs_bnb and importlib.util.find_spec("bitsandbytes") is None:
        return "adamw_torch", f"optimizer {name!r} needs bitsandbytes (not installed): adamw_torch"
    if name.startswith("paged_") and not _is_gpu(profile):
        return name, f"optimizer {name!r} pages its state only on CUDA; on CPU it is plain AdamW"
    return name, None


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
    """A local folder for `transformer.model` (aliases, Kaggle inputs: kit.models.source)."""
    if importlib.util.find_spec("kit.models.source") is None:
        return name
    from kit.models.source import resolve_model

    return str(resolve_model(name))


def unwrap_peft(model: nn.Module) -> nn.Module:
    """The transformers model inside a PeftModel (the model itself otherwise)."""
    from peft import PeftModel

    return model.get_base_model() if isinstance(model, PeftModel) else model


def classification_head_names(model: nn.Module) -> list[str]:
    """Top-level modules of a sequence-classification model that are not the pretrained backbone.

    That is the head the checkpoint does not hold: `score` on Llama/Qwen2/Phi-3/Gemma/Mistral,
    `classifier` on BERT-likes, `pooler` + `classifier` on DeBERTa: read from the model, never
    guessed.
    """
    inner = unwrap_peft(model)
    backbone = getattr(inner, "base_model_prefix", None)
    heads = [
        name
        for name, child in inner.named_children()
        if name != backbone and any(True for _ in child.parameters())
    ]
    if not heads:
        raise KitError(
            f"{type(inner).__name__} has no classification head outside its backbone "
            f"`{backbone}`. Fix: load it with AutoModelForSequenceClassification."
        )
    return heads


def _linear_types() -> tuple[type, ...]:
    # bitsandbytes' Linear4bit / Linear8bitLt subclass nn.Linear, so quantized models match too.
    return (nn.Linear,)


def derive_target_modules(model: nn.Module, setting: str | list[str]) -> str | list[str]:
    """LoRA targets for `lora.target_modules`: an explicit list, "all-linear", or "auto".

    "auto": the names of every Linear layer inside the backbone (attention and MLP), read from the
    loaded model: Phi-3's fused `qkv_proj`/`gate_up_proj`, Llama's `q_proj`...`down_proj`. The head
    is excluded (it is trained whole through `modules_to_save`). If a backbone name also occurs in
    the head, a regex limited to the backbone is returned instead of a list.
    """
    inner = unwrap_peft(model)
    if isinstance(setting, list):
        names = {n.rsplit(".", 1)[-1] for n, _ in inner.named_modules()}
        missing = [t for t in setting if t not in names]
        if missing:
            linear = sorted(_linear_names(inner, inner.base_model_prefix))
            raise KitError(
                f"transformer.lora.target_modules names {missing}, which {type(inner).__name__} "
                f"does not have. Its Linear layers are {linear}; or use 'auto' / 'all-linear'."
            )
        return list(setting)
    if setting == "all-linear":
        return "all-linear"
    if setting != "auto":
        raise KitError(
            f"transformer.lora.target_modules is {setting!r}; use 'auto', 'all-linear' or a list "
            "of module names such as [q_proj, v_proj]."
        )
    backbone = inner.base_model_prefix
    names = _linear_names(inner, backbone)
    if not names:
        raise KitError(f"{type(inner).__name__} has no Linear layers in `{backbone}` to adapt.")
    head_names: set[str] = set()
    for head in classification_head_names(inner):
        head_names |= {n.rsplit(".", 1)[-1] for n, _ in getattr(inner, head).named_modules() if n}
    if names & head_names:
        return rf"^{re.escape(backbone)}\..*\.({'|'.join(sorted(names))})$"
    return sorted(names)


def _linear_names(model: nn.Module, backbone: str) -> set[str]:
    return {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if name.startswith(f"{backbone}.") and isinstance(module, _linear_types())
    }


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
    """Estimate training memory (kit.models.llm.memory_plan); on a GPU, stop early if it won't fit.

    QLoRA always checkpoints gradients here, so the plan does too. The estimate goes to `report`.
    """
    if cfg.max_length is None:
        if _is_gpu(profile):
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
    estimate = memory_plan.plan_from_params(planned, config, profile, num_labels=num_labels)
    report["memory_estimate"] = estimate.to_dict()
    report["memory_estimate_gb"] = estimate.total_gb
    if _is_gpu(profile):
        budget = cfg.memory_budget_gb or profile.memory_gb
        memory_plan.check_fits(estimate, budget, context=f"transformer.model {cfg.model!r}")


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
    return AutoModelForSequenceClassification.from_pretrained(path, **kwargs)


def cast_head_input(model: nn.Module, heads: list[str]) -> None:
    """Feed the float32 head in its own dtype when the frozen backbone runs in fp16/bf16.

    Under autocast this is a no-op; without it (plain inference) fp16 hidden states would meet
    float32 weights.
    """
    inner = unwrap_peft(model)
    for head in heads:
        module = getattr(inner, head)
        if getattr(module, "_kit_head_cast", False):
            continue
        # peft wraps the head: its trained copy lives in `modules_to_save`, the frozen original
        # beside it. The copy's dtype is the one that computes.
        weights = getattr(module, "modules_to_save", module)

        def _pre_hook(_module: nn.Module, args: tuple, weights: nn.Module = weights) -> tuple:
            if not args or not torch.is_tensor(args[0]) or not args[0].is_floating_point():
                return args
            dtype = next(p.dtype for p in weights.parameters() if p.is_floating_point())
            return (args[0].to(dtype), *args[1:])

        module.register_forward_pre_hook(_pre_hook)
        module._kit_head_cast = True


def trainable_to_float32(model: nn.Module) -> int:
    """Cast every trainable parameter (LoRA, head) to float32; return how many values train."""
    count = 0
    for param in model.parameters():
        if param.requires_grad:
            if param.dtype != torch.float32:
                param.data = param.data.float()
            count += param.numel()
    return count


def load_lora_classifier(
    cfg: TransformerParams,
    num_labels: int,
    task: str,
    label_names: list[str],
    profile: HardwareProfile,
    report: dict[str, Any] | None = None,
) -> tuple[nn.Module, Any]:
    """A decoder LLM (or encoder) as a LoRA / QLoRA sequence classifier, and its tokenizer.

    `cfg.model` is a local folder or an alias resolved by kit.models.source. `profile` is the
    kit.models.hardware profile (kind, device, capability). `report`, when given, receives the
    backend and why, target modules, head names, dtypes, parameter counts, memory estimate and peak.
    """
    report = {} if report is None else report
    lora = cfg.lora
    backend, reason = choose_backend(lora.unsloth, profile)
    report.update(backend=backend, backend_reason=reason)
    if backend == "peft" and lora.unsloth == "auto" and _is_gpu(profile):
        _notice(reason, report)
    path = resolve_model_path(cfg.model)
    report["model_path"] = path
    plan_memory(cfg, path, num_labels, profile, report)

    model_type = read_config(path).model_type
    dtype = compute_dtype(profile, model_type)
    report["compute_dtype"] = str(dtype).replace("torch.", "")
    if model_type in FP16_UNSAFE_MODEL_TYPES and dtype == torch.float32 and _is_gpu(profile):
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


def keep_cpu_4bit_layout(model: nn.Module) -> int:
    """Stop bitsandbytes (>= 0.48) from repacking 4-bit weights on CPU at the first eval forward.

    On CPUs with AVX512-BF16, `Linear4bit.forward` converts its weights to a packed layout the
    first time it runs without grad in eval mode, and every later forward, training included, uses
    that layout, which computes differently. Training then depends on whether an evaluation ran in
    this process, so a resumed run drifts from an uninterrupted one (seen: 1e-4 to 1e-1 in
    probabilities). One layout throughout keeps resume exact. Returns the layers changed.
    """
    changed = 0
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False
            changed += 1
    return changed


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
