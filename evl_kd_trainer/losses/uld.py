"""Universal Logit Distillation (ULD; Boizard et al., "Towards Cross-Tokenizer Distillation: the Universal
Logit Distillation Loss for LLMs", TMLR 2025).

ULD's loss (the paper's "ULD loss" of Sec. 3: a closed-form Wasserstein distance between the two
next-token distributions under a uniform transport cost) compares the *sorted* probability vectors of teacher and student,
so it needs neither a shared vocabulary nor a token mapping:

    ULD(p_s, p_t) = sum_i | sort(p_s)_i - sort(p_t)_i |,     sort = descending, shorter vector zero-padded,

computed per aligned answer position (see :mod:`evl_kd_trainer.losses.alignment`), averaged over the
positions of each sample and then over the samples, as the reference code does.
"""

from __future__ import annotations

import torch

from evl_kd_trainer.losses.alignment import masked_sample_mean


def sorted_probabilities(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Softmax over the vocabulary (float32), sorted in descending order."""
    return torch.softmax(logits.float() / temperature, dim=-1).sort(dim=-1, descending=True).values


def sorted_l1(p_sorted: torch.Tensor, q_sorted: torch.Tensor) -> torch.Tensor:
    """L1 distance of two descending probability vectors of possibly different lengths, zero-padding the shorter.

    The padded tail contributes ``sum |x - 0|``, i.e. the tail mass of the longer vector: it is added
    directly instead of materialising a padded copy (a (B, R, 152k) tensor for Qwen).
    """
    k = min(p_sorted.shape[-1], q_sorted.shape[-1])
    head = (p_sorted[..., :k] - q_sorted[..., :k]).abs().sum(dim=-1)
    tail = p_sorted[..., k:].sum(dim=-1) + q_sorted[..., k:].sum(dim=-1)
    return head + tail


def uld_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    student_temperature: float = 1.0,
    teacher_temperature: float = 1.0,
) -> torch.Tensor:
    """ULD distance (Boizard et al. 2025, the ULD loss) between index-aligned student and teacher positions.

    Args:
        student_logits: ``(B, R, Vs)`` student logits at the aligned answer positions.
        teacher_logits: ``(B, R, Vt)`` teacher logits at the same aligned positions (``Vt`` may differ).
        mask: ``(B, R)`` boolean, True on aligned pairs; ``None`` means all positions count.
        student_temperature, teacher_temperature: softmax temperatures (1 in ULD's reference config).

    Returns:
        Scalar: per-position sorted-probability L1, averaged over each sample's valid positions, then
        over samples with at least one (0 if none). Unweighted: ULD's ``lambda`` is applied by the method.
    """
    if student_logits.shape[:2] != teacher_logits.shape[:2]:
        raise ValueError("student and teacher logits must be aligned to the same (B, R)")
    if mask is None:
        mask = torch.ones(student_logits.shape[:2], dtype=torch.bool, device=student_logits.device)
    per_position = sorted_l1(
        sorted_probabilities(student_logits, student_temperature),
        sorted_probabilities(teacher_logits, teacher_temperature),
    )
    return masked_sample_mean(per_position, mask)
