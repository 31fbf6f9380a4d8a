"""A student's soft targets: the teacher's probability of each training row, alpha and T."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from kit.errors import KitError

__all__ = ["DistillTargets"]


@dataclass(frozen=True)
class DistillTargets:
    """One teacher probability row per training row, and the loss's weight and temperature.

    The loss (kit.models.hf.distill) is (1 - alpha) CE(labels) + alpha T^2 KL(teacher_T ||
    student_T), with both distributions softened by the temperature T.
    """

    probs: np.ndarray  # (n_train, K), in the order of the training texts
    alpha: float
    temperature: float

    def check(self, n_rows: int, num_labels: int) -> None:
        """A KitError unless there is one probability row of width K per training text."""
        if self.probs.shape != (n_rows, num_labels):
            raise KitError(f"distill targets have shape {self.probs.shape}; expected "
                           f"({n_rows}, {num_labels}): one teacher probability row per training "
                           "text, one column per label.")
        if not np.isfinite(self.probs).all() or (self.probs < 0).any() or (self.probs > 1).any():
            raise KitError("distill targets hold values outside [0, 1] (or NaN): the teacher's "
                           "predictions must be probabilities.")

    def fingerprint(self) -> dict[str, Any]:
        """What makes two students' training the same (kit.models.hf.resume): alpha, T, targets."""
        digest = hashlib.sha256(np.ascontiguousarray(self.probs, dtype=np.float64).tobytes())
        return {"alpha": float(self.alpha), "temperature": float(self.temperature),
                "teacher_probs": digest.hexdigest()}
