"""Layer-wise learning-rate decay (LLRD): optimizer parameter groups with lower rates further down.

The head (classifier, pooler, final norm) and the top layer train at `lr`; each layer below at
`decay` times the one above; the embeddings, under the lowest layer, at lr·decay^L for L layers.
Pretrained lower layers hold general features that a high rate would wash out (Sun et al. 2019,
"How to Fine-Tune BERT for Text Classification"; the usual setting of Kaggle NLP winners).
Layers are found by their numbered module names (`encoder.layer.3.`, `model.layers.3.`, `h.3.`),
so it works for encoders and for decoder LLMs with LoRA (only trainable parameters are grouped).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from torch import nn

from kit.errors import KitError

__all__ = ["layer_of", "layerwise_param_groups"]

_LAYER = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")
_EMBEDDING = re.compile(r"embed|(?:^|\.)(?:wte|wpe|shared)\.")


def layer_of(name: str) -> int | str:
    """The layer number a parameter belongs to, or "embeddings", or "head"."""
    match = _LAYER.search(name)
    if match:
        return int(match[1])
    return "embeddings" if _EMBEDDING.search(name) else "head"


def layerwise_param_groups(
    model: nn.Module, lr: float, decay: float, weight_decay: float, decay_names: Iterable[str],
) -> list[dict]:
    """Optimizer parameter groups, head first: one per layer and weight-decay setting.

    `decay_names` are the parameters that take weight decay (Trainer's rule: not biases or
    norms). The head comes first because Trainer logs the first group's learning rate.
    """
    with_decay = set(decay_names)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    where = {n: layer_of(n) for n, _ in named}
    layers = sorted({w for w in where.values() if isinstance(w, int)})
    if not layers:
        raise KitError(
            f"transformer.llrd: no numbered layers (`layer.N.`, `layers.N.`) among the trainable "
            f"parameters of {type(model).__name__}, so there is nothing to decay. Set llrd: null."
        )
    top = layers[-1]
    depth = len(layers)

    def scale(w: int | str) -> float:
        if w == "head":
            return 1.0
        if w == "embeddings":
            return decay**depth
        return decay ** (top - w)

    order = ["head", *reversed(layers), "embeddings"]
    groups = []
    for w in order:
        for decays in (True, False):
            params = [p for n, p in named if where[n] == w and (n in with_decay) == decays]
            if params:
                groups.append({"params": params, "lr": lr * scale(w),
                               "weight_decay": weight_decay if decays else 0.0})
    return groups
