"""Adversarial training: FGM on the word embeddings, AWP on the weights; restored after each step.

Both run a second forward/backward pass on every training batch (about twice the cost) with the
model nudged uphill along the gradient of the clean pass, then put the exact weights back:

- **FGM** (Miyato et al. 2017, "Adversarial Training Methods for Semi-Supervised Text
  Classification"): the word-embedding matrix moves by `eps` · g / ‖g‖; the step's gradient is
  the clean one plus the perturbed one.
- **AWP** (Wu et al. 2020; the Feedback Prize winners' form): every trainable weight matrix W
  moves by ‖W‖ · g / ‖g‖, clipped to W ± eps·|W| elementwise; the step's gradient is the one at
  the perturbed weights (the clean pass only gives the direction).

Nothing survives a step, so resuming needs no extra state: the second pass draws its dropout
masks from the RNG that checkpoints restore.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from kit.errors import KitError

__all__ = ["DEFAULT_EPS", "Adversary", "make_adversary"]

DEFAULT_EPS = {"fgm": 1.0, "awp": 0.01}


def _unit(grad: torch.Tensor) -> torch.Tensor | None:
    """g / ‖g‖, or None for a zero or non-finite gradient (an fp16 overflow step)."""
    norm = torch.linalg.vector_norm(grad.float())
    if norm == 0 or not torch.isfinite(norm):
        return None
    return grad / norm.to(grad.dtype)


class Adversary:
    """Perturb the model before the second pass of a batch, and restore it afterwards."""

    method = ""
    replaces_gradient = False  # AWP: the step uses only the perturbed pass's gradient

    def __init__(self, eps: float, start_epoch: float):
        self.eps = float(eps)
        self.start_epoch = float(start_epoch)

    def active(self, epoch: float | None) -> bool:
        """Whether the adversarial pass runs at this point of training."""
        return (epoch or 0.0) >= self.start_epoch

    def targets(self, model: nn.Module) -> dict[str, nn.Parameter]:
        raise NotImplementedError

    def shift(self, param: torch.Tensor, grad: torch.Tensor) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def perturbed(self, model: nn.Module) -> Iterator[None]:
        """The targets moved along their gradients; their exact values back afterwards.

        The gradient is what `.grad` holds after the clean pass: this batch's, plus the earlier
        batches' of the same optimizer step under gradient accumulation (as the usual
        implementations do; it spares a copy of the gradients).
        """
        backup: dict[str, torch.Tensor] = {}
        targets = self.targets(model)
        with torch.no_grad():
            for name, param in targets.items():
                direction = None if param.grad is None else _unit(param.grad)
                if direction is None:
                    continue
                backup[name] = param.detach().clone()
                self.shift(param, direction)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, saved in backup.items():
                    targets[name].copy_(saved)


class Fgm(Adversary):
    """Fast Gradient Method on the input (word) embedding matrix."""

    method = "fgm"

    def targets(self, model: nn.Module) -> dict[str, nn.Parameter]:
        embeddings = model.get_input_embeddings()
        if embeddings is None or not embeddings.weight.requires_grad:
            raise KitError(
                "transformer.adversarial: fgm needs trainable word embeddings, which "
                f"{type(model).__name__} does not have (frozen, or LoRA). Use adversarial: awp."
            )
        return {"input_embeddings": embeddings.weight}

    def shift(self, param: torch.Tensor, direction: torch.Tensor) -> None:
        param.add_(direction, alpha=self.eps)


class Awp(Adversary):
    """Adversarial Weight Perturbation on every trainable weight matrix (names with "weight")."""

    method = "awp"
    replaces_gradient = True

    def targets(self, model: nn.Module) -> dict[str, nn.Parameter]:
        return {n: p for n, p in model.named_parameters() if p.requires_grad and "weight" in n}

    def shift(self, param: torch.Tensor, direction: torch.Tensor) -> None:
        size = torch.linalg.vector_norm(param.float()).to(param.dtype)
        bound = param.abs() * self.eps
        low, high = param - bound, param + bound
        param.add_(direction * size)
        torch.minimum(torch.maximum(param, low), high, out=param)


def make_adversary(method: str, eps: float | None, start_epoch: float) -> Adversary | None:
    """The adversary for `transformer.adversarial` (None for "none")."""
    if method == "none":
        return None
    classes = {"fgm": Fgm, "awp": Awp}
    if method not in classes:
        raise KitError(f"transformer.adversarial is {method!r}; use none, fgm or awp.")
    return classes[method](DEFAULT_EPS[method] if eps is None else eps, start_epoch)
