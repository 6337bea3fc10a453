"""The search reward's two terms: knowledge distillation and attention transfer."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, T: float = 2.0) -> torch.Tensor:
    """Hinton KD: KL(p_teacher || p_student) at temperature T, times T^2, batch mean.

    This is ``F.kl_div(log_softmax(s / T), softmax(t / T), 'batchmean') * T^2``, the form the original
    tool wrote as KL(student, teacher) after the argument order.
    """
    return F.kl_div(F.log_softmax(student / T, 1), F.softmax(teacher / T, 1), reduction="batchmean") * T * T


def attention_map(f: torch.Tensor) -> torch.Tensor:
    """Zagoruyko & Komodakis: A = sum_c F_c^2 flattened, L2-normalised; an FC feature vector is used as is."""
    f = f.float()
    a = f.pow(2).sum(1) if f.dim() == 4 else f
    return F.normalize(a.reshape(a.shape[0], -1), dim=1)


def at_loss(student_maps: list[torch.Tensor], teacher_maps: list[torch.Tensor]) -> torch.Tensor:
    """Sum over layers of the mean squared difference of normalised maps (the reference AT code)."""
    if not student_maps:
        return torch.zeros(())
    return sum((s - t).pow(2).mean() for s, t in zip(student_maps, teacher_maps))
