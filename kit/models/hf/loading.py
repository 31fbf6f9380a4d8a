"""Load a sequence classifier and its tokenizer: an encoder here, LoRA decoders in models.llm."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedTokenizerBase

from kit.config.params import TransformerParams
from kit.core.model_source import resolve_model


def load_classifier(
    cfg: TransformerParams,
    num_labels: int,
    task: str,
    label_names: list[str],
    profile: Any,
    report: dict[str, Any] | None = None,
) -> tuple[torch.nn.Module, PreTrainedTokenizerBase]:
    """A sequence classifier and its tokenizer for `cfg.model` (LoRA: kit.models.llm.lora).

    `report` (LoRA only) collects what the LoRA loader decided: backend, targets, head, memory.
    """
    path = resolve_model(cfg.model)
    if cfg.lora.enabled:
        from kit.models.llm.lora import (
            load_lora_classifier,  # heavy (peft, maybe bitsandbytes): lazily
        )

        return load_lora_classifier(
            dataclasses.replace(cfg, model=path), num_labels, task, label_names, profile,
            report=report,
        )
    tokenizer = AutoTokenizer.from_pretrained(path)
    problem = (
        "multi_label_classification" if task == "multilabel" else "single_label_classification"
    )
    model = AutoModelForSequenceClassification.from_pretrained(
        path,
        num_labels=num_labels,
        id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)},
        problem_type=problem,
        dtype=torch.float32,  # trainable weights stay fp32; Trainer's autocast does fp16/bf16
    )
    # Decoder models have no pad token; batching needs one on the tokenizer AND the model config
    # (transformers #34055), also after a reload, hence it is saved with both.
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer
