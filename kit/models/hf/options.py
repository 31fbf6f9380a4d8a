"""The winners' training options of `transformer` params, built once for `KitTrainer`.

`llrd` (kit.models.hf.llrd), `ema_decay` (kit.models.hf.ema), `adversarial` (kit.models.hf.
adversarial) and `multi_sample_dropout` (kit.models.hf.heads); all off by default. Each keeps the
kit's exact resume: the EMA average is saved in every checkpoint, the others hold no state
between steps (their randomness comes from the RNG that checkpoints restore).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from torch import nn

from kit.config.params import TransformerParams
from kit.models.hf.adversarial import Adversary, make_adversary
from kit.models.hf.ema import WeightEma
from kit.models.hf.heads import use_multi_sample_dropout

__all__ = ["TrainingOptions", "training_options"]

log = logging.getLogger(__name__)


@dataclass
class TrainingOptions:
    """What KitTrainer does beyond plain fine-tuning (every field None: nothing)."""

    llrd: float | None = None
    ema: WeightEma | None = None
    adversary: Adversary | None = None


def training_options(cfg: TransformerParams, model: nn.Module) -> TrainingOptions:
    """The options `cfg` asks for; multi-sample dropout is applied to `model` here."""
    if cfg.multi_sample_dropout > 1:
        head = use_multi_sample_dropout(model, cfg.multi_sample_dropout)
        log.info(f"multi-sample dropout: {head} averages {cfg.multi_sample_dropout} dropout "
                 "masks in training")
    options = TrainingOptions(
        llrd=cfg.llrd,
        ema=WeightEma(cfg.ema_decay) if cfg.ema_decay is not None else None,
        adversary=make_adversary(cfg.adversarial, cfg.adversarial_eps,
                                 cfg.adversarial_start_epoch),
    )
    if options.adversary is not None:
        log.info(f"adversarial training: {options.adversary.method} (eps "
                 f"{options.adversary.eps:g}) from epoch {options.adversary.start_epoch:g}")
    return options
