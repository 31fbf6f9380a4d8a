"""Exponential moving average (EMA) of the trainable weights, saved with every checkpoint.

After each optimizer step t: ema_t = decay·ema_(t-1) + (1 − decay)·w_t, starting from the weights
training begins with. Evaluation (hence the best checkpoint and early stopping) and the final
predictions and export use the averaged weights; training goes on with the raw ones. The average
is part of the training state: `KitTrainer` writes it into each checkpoint (`EMA_FILE`) before
the checkpoint is marked complete, and a resumed run continues the same average, so a killed run
ends with the same weights as an uninterrupted one.

With fewer than about 1/(1 − decay) steps the average stays close to the starting weights: 0.999
suits runs of thousands of steps, 0.99 hundreds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import TrainerCallback

from kit.errors import KitError

__all__ = ["EMA_FILE", "EmaCallback", "WeightEma"]

EMA_FILE = "kit_ema.safetensors"


def _trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


class WeightEma:
    """The moving average of a model's trainable parameters (None until training starts)."""

    def __init__(self, decay: float):
        if not 0 < decay < 1:
            raise KitError(f"transformer.ema_decay is {decay}; use a value in (0, 1), e.g. 0.999.")
        self.decay = float(decay)
        self.shadow: dict[str, torch.Tensor] | None = None

    def start(self, model: nn.Module) -> None:
        """Begin the average at the model's weights, unless a checkpoint already gave one."""
        if self.shadow is None:
            self.shadow = {n: p.detach().clone() for n, p in _trainable(model).items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the weights after an optimizer step into the average."""
        if self.shadow is None:
            self.start(model)
            return
        for name, p in _trainable(model).items():
            self.shadow[name].mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Put the averaged weights into the model (for good: prediction and export)."""
        if self.shadow is None:
            return
        for name, p in _trainable(model).items():
            p.copy_(self.shadow[name])

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """The averaged weights in the model for the duration; the raw ones back, bit for bit."""
        if self.shadow is None:
            yield
            return
        params = _trainable(model)
        with torch.no_grad():
            raw = {n: p.detach().clone() for n, p in params.items()}
            self.copy_to(model)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(raw[name])

    def save(self, folder: Path) -> None:
        """Write the average into a checkpoint folder."""
        if self.shadow is not None:
            save_file({n: t.detach().cpu().contiguous() for n, t in self.shadow.items()},
                      str(Path(folder) / EMA_FILE))

    def load(self, folder: str | Path, model: nn.Module) -> None:
        """Continue the average saved in a checkpoint folder."""
        path = Path(folder) / EMA_FILE
        if not path.is_file():
            raise KitError(
                f"{folder} has no {EMA_FILE}: it was written without transformer.ema_decay, so "
                "its weight average is unknown. Delete the checkpoints to start over with EMA."
            )
        params = _trainable(model)
        saved = load_file(str(path))
        if set(saved) != set(params):
            raise KitError(f"{path} averages other parameters than the model trains; delete the "
                           "checkpoints to start over.")
        self.shadow = {n: saved[n].to(device=p.device, dtype=p.dtype) for n, p in params.items()}


class EmaCallback(TrainerCallback):
    """Starts the average when training begins and updates it after every optimizer step."""

    def __init__(self, ema: WeightEma):
        self.ema = ema

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.ema.start(model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.ema.update(model)
