"""The distillation loss: cross-entropy on the labels mixed with KL to a teacher at a temperature.

Hinton et al. 2015 ("Distilling the Knowledge in a Neural Network"): both the teacher's and the
student's distributions are softened by T, and the KL term is scaled by T^2 so that its gradients
keep their size as T changes:

    loss = (1 - alpha) * CE(labels) + alpha * T^2 * KL(teacher_T || student_T)

The teacher gives probabilities (its saved predictions), not logits: softened as p^(1/T),
renormalised (the same as softmax(log p / T)); per label for multilabel (Bernoulli KL on
sigmoid(logit(p) / T)). The KL term is a mean over the batch (and labels, for multilabel), like
the cross-entropy it is mixed with. Class weights and label smoothing stay on the CE term only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - the usual torch alias

__all__ = ["distillation_loss", "soft_kl"]

_EPS = 1e-7  # a teacher probability of exactly 0 or 1 would make log p infinite


def soft_kl(logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float,
            task: str) -> torch.Tensor:
    """KL(teacher_T || student_T), averaged over the rows (and labels, for multilabel)."""
    t = float(temperature)
    p = teacher_probs.to(logits.dtype).clamp(_EPS, 1 - _EPS)
    if task == "multilabel":
        teacher = torch.sigmoid((torch.log(p) - torch.log1p(-p)) / t)
        # KL(Bern(q) || Bern(sigmoid(z))) = BCE(z, q) - H(q): the teacher's entropy is constant
        entropy = -(teacher * torch.log(teacher) + (1 - teacher) * torch.log1p(-teacher))
        return (F.binary_cross_entropy_with_logits(logits / t, teacher, reduction="none")
                - entropy).mean()
    log_teacher = F.log_softmax(torch.log(p) / t, dim=-1)
    log_student = F.log_softmax(logits / t, dim=-1)
    return F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)


def distillation_loss(hard_loss: torch.Tensor, logits: torch.Tensor,
                      teacher_probs: torch.Tensor, alpha: float, temperature: float,
                      task: str) -> torch.Tensor:
    """(1 - alpha) * `hard_loss` (the CE on the labels) + alpha * T^2 * KL to the teacher."""
    if alpha == 0:  # exactly the plain loss, and no KL computed
        return hard_loss
    kl = soft_kl(logits, teacher_probs, temperature, task)
    return (1 - alpha) * hard_loss + alpha * float(temperature) ** 2 * kl
