"""Which LoRA backend, compute dtype, quantization and optimizer fit this hardware."""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import torch

from kit.config.params import TransformerParams
from kit.errors import KitError
from kit.models.hardware import HardwareProfile

# Families whose activations overflow fp16 (transformers #37226): on fp16-only GPUs they compute in
# float32 instead (slower, but right).
FP16_UNSAFE_MODEL_TYPES = ("gemma3", "gemma3_text")


def is_gpu(profile: HardwareProfile) -> bool:
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
    if not is_gpu(profile):
        why = "there is no CUDA GPU (unsloth needs one)"
    elif cap is None or tuple(cap) < (7, 0):
        why = f"the GPU is {profile.sm}; unsloth needs compute capability >= 7.0 (P100: sm_60)"
    elif importlib.util.find_spec("unsloth") is None:
        why = "unsloth is not installed (pip install 'compkit[unsloth]', holding the present torch)"
    elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
        why = "this is one of several DDP processes, which unsloth's open-source build does not run"
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


FAST_ADAMW = "adamw_torch_fused"


def fused_adamw_on_cpu() -> bool:
    """Whether this torch has the fused AdamW kernel for CPU tensors (torch >= 2.4)."""
    try:
        torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], fused=True)
    except (RuntimeError, ValueError, TypeError):
        return False
    return True


def resolve_optimizer(name: str, profile: HardwareProfile) -> tuple[str, str | None]:
    """The Trainer `optim` to use for `name` here, and a notice when it differs or does less.

    bitsandbytes 0.50 runs `adamw_8bit` and `paged_adamw_*` on CPU (paged ones page only on CUDA);
    without bitsandbytes they fall back to the fused AdamW. The fused AdamW (the default, and
    Trainer's own default on torch >= 2.8) updates all weights in one kernel: the per-tensor
    `adamw_torch` loop cost a fifth of MiniLM's CPU step time (kit issue 13). Where the kernel
    is missing (CPU on torch < 2.4) it falls back to `adamw_torch`.
    """
    needs_bnb = "8bit" in name or name.startswith("paged_") or "bnb" in name
    if needs_bnb and importlib.util.find_spec("bitsandbytes") is None:
        fallback, _ = resolve_optimizer(FAST_ADAMW, profile)
        return fallback, f"optimizer {name!r} needs bitsandbytes (not installed): {fallback}"
    if name.startswith("paged_") and not is_gpu(profile):
        return name, f"optimizer {name!r} pages its state only on CUDA; on CPU it is plain AdamW"
    if name == FAST_ADAMW and not is_gpu(profile) and not fused_adamw_on_cpu():
        return "adamw_torch", (f"optimizer {name!r}: this torch {torch.__version__} has no fused "
                               "AdamW for CPU (torch >= 2.4): adamw_torch")
    return name, None
