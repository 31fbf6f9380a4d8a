"""A LoRA classifier's dtypes kept right: the 4-bit compute dtype, float32 trainables and head.

Trainable parameters (LoRA + head) are float32 even when the frozen base is fp16/bf16 or 4-bit,
so fp16 autocast never unscales fp16 gradients (transformers #30559); the head is fed in its own
dtype; bitsandbytes' CPU 4-bit repacking is turned off so a resumed run equals an uninterrupted
one. kit.models.llm.lora calls these while loading.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kit.models.llm.anatomy import unwrap_peft

__all__ = ["cast_head_input", "keep_cpu_4bit_layout", "trainable_to_float32",
           "use_compute_dtype"]


def use_compute_dtype(model: nn.Module, quant: Any) -> int:
    """Make `quant`'s 4-bit compute dtype the one the model computes in; return layers changed.

    A pre-quantized checkpoint (unsloth's *-bnb-4bit uploads) carries its own
    quantization_config, and transformers keeps that one's compute dtype over the one passed
    (bitsandbytes configs have no "loading attributes"): bfloat16 on a T4, a P100 or a CPU,
    where the kit computes in float16 / float32. The config is updated too, so an export records
    (and its reload uses) the dtype that trained.
    """
    want = getattr(quant, "bnb_4bit_compute_dtype", None)
    if want is None or not getattr(quant, "load_in_4bit", False):
        return 0
    changed = 0
    for module in model.modules():
        if type(module).__name__ == "Linear4bit" and module.compute_dtype != want:
            module.compute_dtype = want
            changed += 1
    recorded = getattr(model.config, "quantization_config", None)
    if recorded is not None and hasattr(recorded, "bnb_4bit_compute_dtype"):
        recorded.bnb_4bit_compute_dtype = want
    return changed


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
