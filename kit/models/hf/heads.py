"""Multi-sample dropout on the classification head: training logits averaged over K masks.

Inoue 2019 ("Multi-Sample Dropout for Accelerated Training and Better Generalization"): the head
runs K times on the same features, each behind its own dropout mask, and the logits are averaged
(the loss of the average, as Kaggle NLP winners use it). It lowers the variance of the head's
gradient at the cost of K head passes (the backbone still runs once). In evaluation dropout is
off, and the head runs once on the plain features: exactly the plain model.

The model keeps its structure and parameter names (saved checkpoints and the export are a plain
model): the head's `forward` is wrapped on the instance, and the dropout the model applies before
the head (BERT's `dropout`, ModernBERT's `drop`) moves inside the wrapper. A head with dropout
inside (RoBERTa's) draws fresh masks on each of its K runs; a head without any (decoder `score`)
gets one with the model's hidden dropout rate.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["use_multi_sample_dropout"]

_DROPOUT_CHILDREN = ("dropout", "drop")


def _is_dropout(module: nn.Module) -> bool:
    return "Dropout" in type(module).__name__


def _dropout_rate(config: Any) -> float:
    for key in ("classifier_dropout", "hidden_dropout_prob", "hidden_dropout", "dropout"):
        rate = getattr(config, key, None)
        if isinstance(rate, (int, float)) and rate > 0:
            return float(rate)
    return 0.1


def use_multi_sample_dropout(model: nn.Module, samples: int) -> str:
    """Make the model's head average its training logits over `samples` dropout masks.

    Returns the head's name. `samples` 1 leaves the model as it is.
    """
    from kit.models.llm.lora import classification_head_names  # reads the head off the model

    if samples <= 1:
        return ""
    name = classification_head_names(model)[-1]  # the module that outputs the logits
    head = getattr(model, name)
    before = [c for c in _DROPOUT_CHILDREN
              if isinstance(getattr(model, c, None), nn.Module) and _is_dropout(getattr(model, c))]
    if before:
        dropout = getattr(model, before[0])
        setattr(model, before[0], nn.Identity())  # the K masks replace the one before the head
    elif any(_is_dropout(m) for m in head.modules()):
        dropout = nn.Identity()
    else:
        dropout = nn.Dropout(_dropout_rate(getattr(model, "config", None)))
    # Kept out of the module tree (registered in the head it would rename the head's
    # parameters), the dropout is only called in training mode: set it so for good.
    dropout.train(True)
    plain = head.forward

    def forward(features: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if not head.training:
            return plain(features, *args, **kwargs)
        logits = [plain(dropout(features), *args, **kwargs) for _ in range(samples)]
        return torch.stack(logits).mean(dim=0)

    head.forward = forward
    return name
