"""A run's memory plan from its params; whether it fits the GPU budget; if not, what makes it fit.

`plan_from_params` reads the `transformer` section into the plan (kit.models.llm.memory_plan). The
advice names the `transformer` params fields to change, re-estimated with each change
(kit.models.llm.memory_plan), biggest saving first.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from kit.errors import KitError
from kit.models.llm.memory_plan import (
    DEFAULT_PLAN_LENGTH,
    MemoryEstimate,
    MemoryInputs,
    estimate_from_config,
    estimate_from_inputs,
)

if TYPE_CHECKING:
    from kit.config.params import TransformerParams
    from kit.models.hardware import HardwareProfile


def plan_from_params(
    cfg: TransformerParams,
    config: Any,
    profile: HardwareProfile,
    *,
    max_length: int | None = None,
    num_labels: int | None = 2,
) -> MemoryEstimate:
    """Estimate for the `transformer` params section, a model config and the chosen hardware.

    `max_length` overrides `cfg.max_length` (e.g. the EDA's percentile when that is None); with
    neither, the plan assumes DEFAULT_PLAN_LENGTH tokens and says so in its notes.
    """
    seq_len = max_length or cfg.max_length
    notes: tuple[str, ...] = ()
    if seq_len is None:
        seq_len = DEFAULT_PLAN_LENGTH
        notes = (
            f"transformer.max_length is null (derived from the data later): planned with "
            f"{DEFAULT_PLAN_LENGTH} tokens; set transformer.max_length to plan exactly",
        )
    lora = cfg.lora
    estimate = estimate_from_config(
        config,
        quantization=lora.quantization if lora.enabled else "none",
        compute_dtype_bytes=profile.compute_dtype_bytes,
        lora_rank=lora.r if lora.enabled else 0,
        batch_size=cfg.batch_size,
        seq_len=seq_len,
        gradient_checkpointing=cfg.gradient_checkpointing,
        optimizer=cfg.optimizer,
        # Without LoRA the adapters only size the "use QLoRA" advice: planned as all-linear.
        lora_targets=lora.target_modules if lora.enabled else "all-linear",
        num_labels=num_labels,
        lora_dropout=lora.dropout,
        double_quant=lora.double_quant,
    )
    return dataclasses.replace(estimate, notes=notes)


def check_fits(estimate: MemoryEstimate, budget_gb: float | None, context: str) -> None:
    """Raise KitError when the estimate exceeds the budget, with the breakdown and fixes.

    The fixes are re-estimated and applied greedily, biggest saving first, until the run fits;
    the ones not needed are listed after. `budget_gb=None` (CPU, no budget known) checks
    nothing. `context` names the run, e.g. "params/llm.yaml: transformer (Llama-3.1-8B on T4)".
    """
    if budget_gb is None or estimate.total_gb <= budget_gb:
        return
    lines = [
        f"{context}: training needs about {estimate.total_gb:.1f} GB of GPU memory, more than the "
        f"{budget_gb:.1f} GB budget (`transformer.memory_budget_gb`, default the GPU's memory); "
        "it would stop with CUDA out-of-memory part-way.",
        "Estimate:",
        estimate.table(),
        *(f"Note: {note}." for note in estimate.notes),
        "Fixes, biggest saving first, each on top of the ones before (estimated total after it):",
    ]
    current, used = estimate, set()
    while current.total_gb > budget_gb:
        options = [
            (key, text, estimate_from_inputs(dataclasses.replace(current.inputs, **change)))
            for key, text, change in _fix_changes(current.inputs)
            if key not in used
        ]
        if not options:
            break
        key, text, best = min(options, key=lambda o: o[2].total_gb)
        if best.total_gb >= current.total_gb:
            break
        used.add(key)
        current = best
        mark = " (fits)" if best.total_gb <= budget_gb else ""
        lines.append(f"  {len(used)}. {text} → {best.total_gb:.1f} GB{mark}")
    if current.total_gb > budget_gb:
        lines.append(
            "  Even so it does not fit: choose a smaller model (fewer parameters) or a GPU with "
            "more memory."
        )
    rest = [text for key, text, _ in _fix_changes(current.inputs) if key not in used]
    if rest:
        lines.append("Other ways to save memory: " + "; ".join(rest) + ".")
    raise KitError("\n".join(lines))


def _fix_changes(x: MemoryInputs) -> list[tuple[str, str, dict[str, Any]]]:
    """(key, advice naming the params field, change to the inputs) for the fixes that apply."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    if x.quantization != "4bit":
        if x.lora_rank <= 0:
            text = (
                "LoRA on a 4-bit model: `transformer.lora.enabled: true`, "
                "`transformer.lora.quantization: 4bit`"
            )
            out.append(("quant", text, {"quantization": "4bit", "lora_rank": 8}))
        else:
            text = "`transformer.lora.quantization: 4bit` (QLoRA)"
            out.append(("quant", text, {"quantization": "4bit"}))
    if x.batch_size > 1:
        half = x.batch_size // 2
        text = (
            f"`transformer.batch_size: {half}` (from {x.batch_size}) and double "
            "`transformer.grad_accum` (same effective batch)"
        )
        out.append(("batch", text, {"batch_size": half}))
    if x.seq_len > 64:
        half = x.seq_len // 2
        text = (
            f"`transformer.max_length: {half}` (from {x.seq_len}; longer texts get truncated, "
            "check the EDA's length percentiles)"
        )
        out.append(("seq", text, {"seq_len": half}))
    if not x.gradient_checkpointing:
        text = "`transformer.gradient_checkpointing: true` (steps ~30 % slower)"
        out.append(("ckpt", text, {"gradient_checkpointing": True}))
    if x.lora_rank > 4:
        half = x.lora_rank // 2
        out.append(("rank", f"`transformer.lora.r: {half}` (from {x.lora_rank})",
                    {"lora_rank": half}))
    if x.lora_rank > 0 and x.lora_dropout > 0:
        out.append(("dropout", "`transformer.lora.dropout: 0.0` (no per-target dropout copies)",
                    {"lora_dropout": 0.0}))
    if "8bit" not in x.optimizer.lower():
        out.append(("optim", "`transformer.optimizer: paged_adamw_8bit`",
                    {"optimizer": "paged_adamw_8bit"}))
    return out


__all__ = ["check_fits"]
