"""MHCA alignment loss (paper section 2.2, last display) against explicit float64 loops."""

from __future__ import annotations

import pytest
import torch

from evl_kd_trainer.losses import mhca_loss


def reference(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor, reduction: str) -> float:
    """Explicit loops: sum over valid positions of ||h_s - h_t||^2, / #positions (and / D for "mean")."""
    total, count = 0.0, 0
    batch, length, width = student.shape
    for b in range(batch):
        for i in range(length):
            if mask[b, i]:
                count += 1
                for k in range(width):
                    total += (float(student[b, i, k]) - float(teacher[b, i, k])) ** 2
    return total / count / (width if reduction == "mean" else 1)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_matches_loops_with_padding(reduction):
    student, teacher = torch.randn(3, 5, 4, dtype=torch.float64), torch.randn(3, 5, 4, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 1, 0, 1, 0]], dtype=torch.bool)
    value = mhca_loss(student, teacher, mask, reduction=reduction)
    assert value.dtype == torch.float64
    assert value.item() == pytest.approx(reference(student, teacher, mask, reduction), rel=1e-12)


def test_sum_is_width_times_mean_and_no_mask_means_all():
    student, teacher = torch.randn(2, 6, 7), torch.randn(2, 6, 7)
    full = torch.ones(2, 6, dtype=torch.bool)
    assert torch.allclose(mhca_loss(student, teacher), mhca_loss(student, teacher, full))
    assert torch.allclose(mhca_loss(student, teacher, reduction="sum"), 7 * mhca_loss(student, teacher), rtol=1e-6)
    assert torch.allclose(mhca_loss(student, teacher), torch.nn.functional.mse_loss(student, teacher), rtol=1e-6)


def test_padding_never_changes_value_and_gets_zero_gradient():
    student = torch.randn(2, 4, 3)
    teacher = torch.randn(2, 4, 3)
    mask = torch.tensor([[True, True, False, False], [True, False, True, False]])
    expected = mhca_loss(student, teacher, mask)
    student[~mask] = float("nan")
    teacher[~mask] = float("inf")
    student.requires_grad_(True)
    teacher.requires_grad_(True)
    value = mhca_loss(student, teacher, mask)
    assert torch.allclose(value, expected)
    value.backward()
    assert (student.grad[~mask] == 0).all() and (teacher.grad[~mask] == 0).all()
    assert torch.isfinite(student.grad).all() and (student.grad[mask] != 0).any()


def test_no_valid_position_gives_connected_zero():
    student = torch.randn(2, 3, 4, requires_grad=True)
    teacher = torch.randn(2, 3, 4, requires_grad=True)
    value = mhca_loss(student, teacher, torch.zeros(2, 3))
    assert value.item() == 0.0 and value.requires_grad
    value.backward()
    assert (student.grad == 0).all() and (teacher.grad == 0).all()


def test_degenerate_identical_and_single_position():
    student = torch.zeros(1, 1, 5, requires_grad=True)
    value = mhca_loss(student, student.detach().clone())
    value.backward()
    assert value.item() == 0.0 and torch.isfinite(student.grad).all()


def test_bf16_inputs_are_reduced_in_float32():
    student, teacher = torch.randn(2, 16, 64), torch.randn(2, 16, 64)
    sb, tb = student.bfloat16().requires_grad_(True), teacher.bfloat16()
    value = mhca_loss(sb, tb)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(mhca_loss(sb.detach().float(), tb.float()).item(), rel=1e-6)
    value.backward()
    assert sb.grad.dtype == torch.bfloat16
