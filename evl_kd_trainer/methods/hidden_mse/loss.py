"""The FitNets hint loss on aligned positions: a pure function on tensors."""

from __future__ import annotations

import torch


def hidden_mse_loss(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mean over the (b, i) with mask[b, i] and the D features of (student - teacher)^2``.

    Args:
        student: ``(B, R, D)`` student states; teacher: ``(B, R, D)`` teacher states already in the student's
            width; mask: ``(B, R)`` boolean, the aligned pairs.

    Returns a float32 scalar; ``0`` (connected to ``student``'s graph) when no pair is aligned.
    """
    if student.shape != teacher.shape or mask.shape != student.shape[:2]:
        raise ValueError(
            f"shapes differ: student {tuple(student.shape)}, teacher {tuple(teacher.shape)}, mask {tuple(mask.shape)}"
        )
    mask = mask.bool()
    if not bool(mask.any()):
        return student.float().sum() * 0.0
    diff = (student.float() - teacher.float())[mask]
    return diff.pow(2).mean()
