"""Multi-head cross-attention alignment loss ``L_mhca`` of EVL-ECG (paper section 2.2, last display).

The paper prints ``L_mhca = 1/(B L_s) sum_b sum_i ||H_s^(b,i) - H_t_hat^(b,i)||_2^2``: a squared norm
summed over the D_s features, averaged over positions (``reduction="sum"`` here). The default is
``reduction="mean"``, which also averages over features (the usual MSE, = the printed value / D_s),
because the paper's weight ranges only make sense at that scale: with lambda_m in [0.1, 1] and
alpha = 0.3, a per-position squared norm over D_s = 2048 features is ~2048x larger than the MSE and
would swamp the cross-entropy term, while the MSE is O(1) like CE. The printed form stays available.
"""

from __future__ import annotations

import torch

from evl_kd_trainer.losses._checks import (
    check_choice,
    check_mask,
    check_rank,
    compute_dtype,
    shape_str,
    zero_connected,
)

REDUCTIONS = ("mean", "sum")


def mhca_loss(
    student_hidden: torch.Tensor,
    aligned_teacher: torch.Tensor,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """``L_mhca`` (section 2.2): squared error between the student's states and the aligned teacher.

    Args:
        student_hidden: (B, L_s, D_s) student hidden states ``H_s``.
        aligned_teacher: (B, L_s, D_s) ``H_t_hat`` from :class:`~evl_kd_trainer.aligners.CrossAttentionAligner`.
        mask: (B, L_s), True (or 1) on the positions to distil; ``None`` = all.
        reduction: ``"mean"`` (default, MSE over valid positions and features) or ``"sum"`` (sum over
            features, mean over valid positions: the formula as printed). See the module docstring.

    Returns:
        Scalar in float32 (float64 for float64 inputs); a graph-connected 0 when no position is valid.
        Padded positions contribute nothing and receive exactly zero gradient.
    """
    check_rank("student_hidden", student_hidden, 3, "(B, L_s, D_s)")
    check_rank("aligned_teacher", aligned_teacher, 3, "(B, L_s, D_s)")
    if student_hidden.shape != aligned_teacher.shape:
        raise ValueError(
            f"student_hidden {shape_str(student_hidden)} and aligned_teacher {shape_str(aligned_teacher)} "
            "must have the same shape (B, L_s, D_s)."
        )
    check_choice("reduction", reduction, REDUCTIONS)
    mask = check_mask("mask", mask, tuple(student_hidden.shape[:2]))

    dtype = compute_dtype(student_hidden, aligned_teacher)
    # Upcast before subtracting: bf16 differences of nearby states lose most of their digits.
    diff = student_hidden.to(dtype) - aligned_teacher.to(dtype)
    if mask is None:
        n_valid = diff.new_tensor(float(diff.shape[0] * diff.shape[1]))
    else:
        mask = mask.to(diff.device)
        if not bool(mask.any()):
            return zero_connected(student_hidden, aligned_teacher)
        n_valid = mask.sum().to(dtype)
        # Select before squaring (where, not a product): inf/NaN in padding then reaches neither the
        # value nor the gradient, and padded positions get exactly zero gradient.
        diff = torch.where(mask[..., None], diff, torch.zeros_like(diff))
    total = diff.pow(2).sum()
    if reduction == "mean":
        return total / (n_valid * student_hidden.shape[-1])
    return total / n_valid
