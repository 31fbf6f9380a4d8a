"""A model's shapes read from the model itself, built from its config on the meta device.

The memory plan needs parameter counts and layer shapes before any weight is loaded. Rather than
tables per model family, the model is built from its config on PyTorch's meta device (tensors
with a shape and no storage: an 8B model builds in a fraction of a second and allocates nothing)
and its module tree is read: the parameters, the Linear layers bitsandbytes would quantize, the
classification head, and the layers peft adapts for the targets `derive_target_modules` gives,
so the plan and the real run agree.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from kit.errors import KitError
from kit.models.llm.anatomy import classification_head_names, derive_target_modules


@dataclass(frozen=True)
class ModelShape:
    """What the memory estimate needs to know about a model."""

    n_params: int  # every parameter of the base model (tied weights once)
    quantized_params: int  # Linear weights bitsandbytes quantizes (not the head / output layer)
    largest_linear: int  # weights of the biggest of those Linears (dequantized one at a time)
    head_params: int  # classification head, trained whole next to LoRA (0 for a causal LM)
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int  # the MLP's width: input of the projection back to hidden size
    vocab_size: int
    gated_mlp: bool  # gate and up projections (SwiGLU/GeGLU), fused or not
    rms_norm: bool  # RMSNorm (upcasts to fp32) rather than nn.LayerNorm
    lora_modules: int  # Linears that get adapters
    lora_in_out: int  # sum of their in + out features: the LoRA parameters are r times this
    lora_in_features_per_layer: int  # inputs of one layer's adapters (each keeps a dropout copy)


def text_config(config: Any) -> Any:
    """The language model's config (multimodal configs nest it), checked for what plans need."""
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    missing = [a for a in ("hidden_size", "num_hidden_layers", "num_attention_heads")
               if getattr(config, a, None) is None]
    if missing:
        raise KitError(
            f"Cannot plan memory for model type {getattr(config, 'model_type', '?')!r}: its config "
            f"has no {', '.join(missing)}, so its memory cannot be planned before loading. Use a "
            "model whose config has them (Llama, Mistral, Qwen, Phi, Gemma, BERT families do)."
        )
    return config


def build_meta_model(config: Any, num_labels: int | None = 2) -> nn.Module:
    """The model `config` describes, built on the meta device: no memory is allocated.

    A sequence classifier of `num_labels` classes, or the causal LM when `num_labels` is None.
    """
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    config = copy.deepcopy(config)
    auto = AutoModelForCausalLM if num_labels is None else AutoModelForSequenceClassification
    if num_labels is not None:
        config.num_labels = num_labels
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "BertLMHeadModel wants is_decoder"
            return auto.from_config(config)
    except ValueError as err:  # no such class for this model type
        raise KitError(
            f"Cannot plan memory for model type {getattr(config, 'model_type', '?')!r}: "
            f"transformers has no {auto.__name__} for it ({err}). Use a model that has one."
        ) from err


def count_params_from_config(config: Any, num_labels: int | None = 2) -> int:
    """Parameters of the model a config describes, counted on the meta model (nothing loaded).

    `num_labels=None` counts the causal LM (its head is none extra when tied to the embeddings);
    an int counts a sequence classifier of that many classes.
    """
    return _count(build_meta_model(config, num_labels).parameters())


def read_shape(
    config: Any, num_labels: int | None = 2, lora_targets: str | list[str] | None = None
) -> ModelShape:
    """Shapes of the model `config` describes (see ModelShape), read from its meta model.

    `lora_targets` is `transformer.lora.target_modules` ("auto", "all-linear" or names); None
    reads no adapters.
    """
    text = text_config(config)
    model = build_meta_model(config, num_labels)
    h, n_layers = text.hidden_size, text.num_hidden_layers
    heads = classification_head_names(model) if num_labels is not None else []
    # bitsandbytes quantizes the Linears but keeps the head and the LM head in 16 bits.
    kept = {id(m) for name in heads for m in getattr(model, name).modules()}
    if model.get_output_embeddings() is not None:
        kept.add(id(model.get_output_embeddings()))
    quantized = [m.weight.numel() for m in model.modules() if _is_linear(m) and id(m) not in kept]
    layers = _layer_stack(model, n_layers)
    linears = [_in_out(m) for m in layers[0].modules() if _is_linear(m)]
    # The MLP's width is the input of the widest projection back to the hidden size (down_proj,
    # fc2, output.dense); the MLP is gated when the projections up to that width give it twice
    # (gate_proj + up_proj, or Phi-3's fused gate_up_proj).
    wide = [i for i, o in linears if o == h and i > h]
    inter = max(wide) if wide else getattr(text, "intermediate_size", None) or 4 * h
    up = sum(o for i, o in linears if i == h and o in (inter, 2 * inter))
    shape = ModelShape(
        n_params=_count(model.parameters()),
        quantized_params=sum(quantized),
        largest_linear=max(quantized, default=0),
        head_params=sum(_count(getattr(model, name).parameters()) for name in heads),
        hidden_size=h,
        num_layers=n_layers,
        num_heads=text.num_attention_heads,
        intermediate_size=inter,
        vocab_size=model.get_input_embeddings().weight.shape[0],
        gated_mlp=up >= 2 * inter,
        rms_norm=not any(isinstance(m, nn.LayerNorm) for m in layers[0].modules()),
        lora_modules=0,
        lora_in_out=0,
        lora_in_features_per_layer=0,
    )
    if lora_targets is None:
        return shape
    targets = derive_target_modules(model, lora_targets)
    layer_of = {id(m): n for n, layer in enumerate(layers) for m in layer.modules()}
    adapted = _adapted_linears(model, targets, heads, causal=num_labels is None)
    inputs = [0] * n_layers
    for linear in adapted:
        if id(linear) in layer_of:
            inputs[layer_of[id(linear)]] += _in_out(linear)[0]
    return dataclasses.replace(
        shape,
        lora_modules=len(adapted),
        lora_in_out=sum(sum(_in_out(m)) for m in adapted),
        lora_in_features_per_layer=max(inputs),
    )


def _adapted_linears(
    model: nn.Module, targets: str | list[str], heads: list[str], causal: bool
) -> list[nn.Module]:
    """The layers peft puts adapters on for `targets`, asked of peft itself on the meta model.

    peft's matching (suffixes, regexes, its own "all-linear", the head excluded) changes between
    versions; injecting on the meta model costs well under a second and allocates nothing.
    """
    from peft import LoraConfig, TaskType, get_peft_model
    from peft.tuners.lora import LoraLayer

    config = LoraConfig(
        r=1,
        target_modules=targets,
        modules_to_save=list(heads) or None,
        task_type=TaskType.CAUSAL_LM if causal else TaskType.SEQ_CLS,
    )
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model = get_peft_model(model, config)
    return [m.get_base_layer() for m in peft_model.modules() if isinstance(m, LoraLayer)]


def _layer_stack(model: nn.Module, num_layers: int) -> nn.ModuleList:
    """The repeated transformer blocks: the largest ModuleList of `num_layers` modules."""
    stacks = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) == num_layers]
    if not stacks:
        raise KitError(
            f"Cannot plan memory for {type(model).__name__}: no list of {num_layers} layers "
            "(config.num_hidden_layers) in the model."
        )
    return max(stacks, key=lambda s: _count(s.parameters()))


def _is_linear(module: nn.Module) -> bool:
    # transformers' Conv1D (GPT-2) is a Linear with the weight transposed; peft and
    # bitsandbytes treat it as one.
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, (nn.Linear, Conv1D))


def _in_out(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    n_in, n_out = module.weight.shape  # Conv1D
    return int(n_in), int(n_out)


def _count(params: Any) -> int:
    return sum(p.numel() for p in params)


__all__ = ["ModelShape", "build_meta_model", "count_params_from_config", "read_shape",
           "text_config"]
