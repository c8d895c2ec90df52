"""Index alignment of the response spans of two tokenisations (the scheme of ULD, Boizard et al., TMLR 2025).

Teacher and student tokenise the same answer differently, so their response spans have different
lengths and no token-to-token correspondence. ULD (Sec. 3, "Universal Logit Distillation") sidesteps
this: both spans are left-aligned at the first answer position and compared *by index*, each sample
truncated to the shorter of its two spans (reference code: ``size = min(student_size, teacher_size)``).
The methods here reuse that scheme wherever a per-position pairing is needed.
"""

from __future__ import annotations

import torch


def gather_response_positions(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pack the positions selected by ``mask`` of each sample.

    Args:
        x: ``(B, L, X)`` per-position features (logits, hidden states, ...).
        mask: ``(B, L)`` boolean; for next-token logits pass ``response_mask[:, 1:]`` with ``logits[:, :-1]``.

    Returns:
        ``(packed, packed_mask)``: ``packed`` is ``(B, R, X)`` with R the largest count in the batch, the
        selected positions of each sample first (in their original order) and zeros after them;
        ``packed_mask`` is ``(B, R)`` boolean, True on the real entries.
    """
    if x.shape[:2] != mask.shape:
        raise ValueError(f"features {tuple(x.shape)} and mask {tuple(mask.shape)} disagree on (B, L)")
    mask = mask.bool()
    counts = mask.sum(dim=1)
    r = int(counts.max().item()) if counts.numel() else 0
    # A stable sort of "not selected" puts the selected positions first, in order.
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :r]
    packed = x.gather(1, order.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    packed_mask = torch.arange(r, device=x.device).unsqueeze(0) < counts.unsqueeze(1)
    # torch.where rather than a product: padding must be exactly 0 even if x holds inf/nan there.
    packed = torch.where(packed_mask.unsqueeze(-1), packed, torch.zeros((), dtype=x.dtype, device=x.device))
    return packed, packed_mask


def align_response_spans(
    student_x: torch.Tensor,
    student_mask: torch.Tensor,
    teacher_x: torch.Tensor,
    teacher_mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pair the i-th response position of the student with the i-th of the teacher (ULD's scheme).

    Each sample keeps ``min(n_student, n_teacher)`` pairs: the tail of the longer span has no partner
    and is dropped, as in ULD's reference implementation.

    Args:
        student_x: ``(B, Ls, Xs)``; student_mask: ``(B, Ls)`` boolean.
        teacher_x: ``(B, Lt, Xt)``; teacher_mask: ``(B, Lt)`` boolean.

    Returns:
        ``(s, t, mask)`` with ``s`` ``(B, R, Xs)``, ``t`` ``(B, R, Xt)`` and ``mask`` ``(B, R)`` True on the
        aligned pairs (R = largest per-sample pair count); entries outside ``mask`` are zero.
    """
    if student_x.shape[0] != teacher_x.shape[0]:
        raise ValueError("student and teacher batches differ in size")
    s, s_mask = gather_response_positions(student_x, student_mask)
    t, t_mask = gather_response_positions(teacher_x, teacher_mask)
    n = torch.minimum(s_mask.sum(1), t_mask.sum(1))
    r = int(n.max().item()) if n.numel() else 0
    mask = torch.arange(r, device=student_x.device).unsqueeze(0) < n.unsqueeze(1)
    s = torch.where(mask.unsqueeze(-1), s[:, :r], torch.zeros((), dtype=s.dtype, device=s.device))
    t = torch.where(mask.unsqueeze(-1), t[:, :r], torch.zeros((), dtype=t.dtype, device=t.device))
    return s, t, mask


def masked_sample_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the valid positions of each sample, then over the samples that have any (ULD's reduction).

    Args:
        values: ``(B, R)`` per-position losses; mask: ``(B, R)`` boolean.

    Returns:
        A scalar; 0 (still attached to the graph of ``values``) when no sample has a valid position.
    """
    mask = mask.bool()
    values = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))
    counts = mask.sum(dim=1)
    has_any = counts > 0
    if not bool(has_any.any()):
        return values.sum() * 0.0
    per_sample = values.sum(dim=1)[has_any] / counts[has_any].to(values.dtype)
    return per_sample.mean()
