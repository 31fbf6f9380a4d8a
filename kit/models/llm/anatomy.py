"""What a loaded model is made of: its classification head and the linear layers LoRA targets."""

from __future__ import annotations

import re

from torch import nn

from kit.errors import KitError


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
