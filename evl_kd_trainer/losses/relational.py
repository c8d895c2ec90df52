"""Geometric intra-architecture relation matching ``L_rel`` of EVL-ECG (paper section 2.3, equation (1)).

For each sample and the valid positions i, j of the (aligned) teacher and the student:

- distance potential ``psi_D(h_i, h_j) = ||h_i - h_j|| / mu``, with ``mu`` the mean distance over the
  valid off-diagonal pairs (RKD's normalisation; ``mu = 0`` -> no division);
- angle potential ``psi_A(h_i, h_j) = cos(h_i, h_j)``.

``L_k = sum_b sum_{i,j valid} (psi_k^T - psi_k^S)^2 / sum_b n_b^2`` (diagonal included), which is
equation (1)'s ``1 / (B L_s^2)`` when nothing is padded, and ``L_rel = (L_D + L_A) / 2``. Widths may
differ between teacher and student: only L x L relations are compared.

Memory: pairwise work is done in row blocks of the L x L matrices (never an L x L x D difference
tensor); when L needs several blocks, each block runs under activation checkpointing, so what autograd
keeps is O(block x L) instead of a dozen L x L matrices. The price is recomputation in backward, about
2x the matmuls of a single block; pass ``block_size=L`` to trade that memory for speed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from evl_kd_trainer.losses._checks import (
    check_mask,
    check_rank,
    check_same_dims,
    compute_dtype,
    zero_connected,
)
from evl_kd_trainer.losses.ot import l2_normalize

# Elements of one (rows x L) block: 4M floats = 16 MB in float32; L <= 2048 runs as a single block.
_BLOCK_ELEMENTS = 1 << 22


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(x)`` for ``x >= 0`` with value 0 and gradient 0 (not inf/NaN) where ``x == 0``."""
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), torch.zeros_like(x))


def _distance_rows(centered: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Euclidean distances (stop - start, n) from rows ``start:stop`` to all rows of ``centered``.

    The inputs are mean-centred first (distances are translation invariant): hidden states share a
    large common component, and the ``|x|^2 + |y|^2 - 2<x, y>`` form would otherwise cancel it in
    float32. The diagonal is set to exactly 0.
    """
    rows = centered[start:stop]
    norms = (centered * centered).sum(-1)
    sq = (norms[start:stop, None] + norms[None, :] - 2.0 * rows @ centered.T).clamp_min(0.0)
    idx = torch.arange(start, stop, device=centered.device)
    diagonal = idx[:, None] == torch.arange(centered.shape[0], device=centered.device)[None, :]
    return _safe_sqrt(sq.masked_fill(diagonal, 0.0))


def _distance_sum(centered: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    return _distance_rows(centered, start, stop).sum()


def _potential_sums(
    d_t: torch.Tensor,
    d_s: torch.Tensor,
    t_unit: torch.Tensor,
    s_unit: torch.Tensor,
    t_scale: torch.Tensor,
    s_scale: torch.Tensor,
    start: int,
    stop: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sums over rows ``start:stop`` of ``(psi_D^T - psi_D^S)^2`` and ``(psi_A^T - psi_A^S)^2``, given the
    raw distance rows ``d_t``/``d_s`` of those rows."""
    psi_a_t = t_unit[start:stop] @ t_unit.T
    psi_a_s = s_unit[start:stop] @ s_unit.T
    return (d_t / t_scale - d_s / s_scale).pow(2).sum(), (psi_a_t - psi_a_s).pow(2).sum()


def _block_terms(
    t_centered: torch.Tensor,
    s_centered: torch.Tensor,
    t_unit: torch.Tensor,
    s_unit: torch.Tensor,
    t_scale: torch.Tensor,
    s_scale: torch.Tensor,
    start: int,
    stop: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_potential_sums` for one row block, recomputing its distances (the checkpointed path)."""
    d_t = _distance_rows(t_centered, start, stop)
    d_s = _distance_rows(s_centered, start, stop)
    return _potential_sums(d_t, d_s, t_unit, s_unit, t_scale, s_scale, start, stop)


def _run(fn: Callable[..., Any], *args: Any, use_checkpoint: bool) -> Any:
    """``fn(*args)``, under non-reentrant activation checkpointing when asked."""
    return checkpoint(fn, *args, use_reentrant=False) if use_checkpoint else fn(*args)


def _scale(total: torch.Tensor, n: int) -> torch.Tensor:
    """RKD normaliser: mean distance over the n(n-1) off-diagonal pairs, 1 where it is 0 (no division by 0:
    one position or all positions identical, where psi_D is all zeros anyway)."""
    mean = total / max(n * (n - 1), 1)
    return torch.where(mean > 0, mean, torch.ones_like(mean))


def _sample_sums(t: torch.Tensor, s: torch.Tensor, block_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unnormalised sums of the squared potential differences for one sample's valid rows."""
    n = t.shape[0]
    t_c, s_c = t - t.mean(0), s - s.mean(0)
    t_u, s_u = l2_normalize(t), l2_normalize(s)
    if block_rows >= n:
        # One block: the distance matrices are computed once and reused for their own mean.
        d_t, d_s = _distance_rows(t_c, 0, n), _distance_rows(s_c, 0, n)
        return _potential_sums(d_t, d_s, t_u, s_u, _scale(d_t.sum(), n), _scale(d_s.sum(), n), 0, n)
    # Several blocks: the normaliser needs every distance before any psi_D, so distances are computed in
    # a first pass (sums only) and again per block; checkpointing keeps autograd from storing them.
    use_ckpt = torch.is_grad_enabled() and (t.requires_grad or s.requires_grad)
    blocks = [(i, min(i + block_rows, n)) for i in range(0, n, block_rows)]
    t_scale, s_scale = (
        _scale(sum(_run(_distance_sum, c, a, b, use_checkpoint=use_ckpt) for a, b in blocks), n) for c in (t_c, s_c)
    )
    sum_d = t.new_zeros(())
    sum_a = t.new_zeros(())
    for a, b in blocks:
        d, ang = _run(_block_terms, t_c, s_c, t_u, s_u, t_scale, s_scale, a, b, use_checkpoint=use_ckpt)
        sum_d, sum_a = sum_d + d, sum_a + ang
    return sum_d, sum_a


def relational_terms(
    teacher_hidden: torch.Tensor,
    student_hidden: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    block_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L_D, L_A)`` of equation (1); arguments as in :func:`relational_loss`."""
    check_rank("teacher_hidden", teacher_hidden, 3, "(B, L, D_t)")
    check_rank("student_hidden", student_hidden, 3, "(B, L, D_s)")
    check_same_dims(
        ("teacher_hidden", "student_hidden"), (teacher_hidden, student_hidden), [0, 1], "batch size or length"
    )
    mask = check_mask("mask", mask, tuple(student_hidden.shape[:2]))
    if block_size is not None and int(block_size) < 1:
        raise ValueError(f"block_size must be a positive integer, got {block_size!r}.")

    batch = student_hidden.shape[0]
    dtype = compute_dtype(teacher_hidden, student_hidden)
    if mask is not None:
        mask = mask.to(student_hidden.device)
    sum_d = sum_a = None
    count = 0
    for b in range(batch):
        if mask is None:
            t, s = teacher_hidden[b], student_hidden[b]
        else:
            # Index (not multiply) so padding, even inf/NaN, never enters and gets exactly zero gradient.
            t, s = teacher_hidden[b][mask[b]], student_hidden[b][mask[b]]
        n = t.shape[0]
        if n == 0:
            continue
        block_rows = int(block_size) if block_size is not None else max(1, _BLOCK_ELEMENTS // n)
        d, a = _sample_sums(t.to(dtype), s.to(dtype), block_rows)
        sum_d = d if sum_d is None else sum_d + d
        sum_a = a if sum_a is None else sum_a + a
        count += n * n
    if sum_d is None or sum_a is None:
        zero = zero_connected(teacher_hidden, student_hidden)
        return zero, zero
    return sum_d / count, sum_a / count


def relational_loss(
    teacher_hidden: torch.Tensor,
    student_hidden: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    block_size: int | None = None,
) -> torch.Tensor:
    """``L_rel = (L_D + L_A) / 2`` of section 2.3 (equation (1) for ``k in {D, A}``).

    Args:
        teacher_hidden: (B, L, D_t) teacher states (in EVL, the aligned teacher ``H_t_hat``).
        student_hidden: (B, L, D_s) student states ``H_s``; D_s may differ from D_t.
        mask: (B, L), True (or 1) on the positions to compare; ``None`` = all.
        block_size: rows per pairwise block; ``None`` picks ~4M elements per block.

    Returns:
        Scalar in float32 (float64 for float64 inputs); a graph-connected 0 when no position is valid.
    """
    loss_d, loss_a = relational_terms(teacher_hidden, student_hidden, mask, block_size=block_size)
    return 0.5 * (loss_d + loss_a)
