"""Relational loss (paper section 2.3, equation (1)) against explicit float64 pair loops."""

from __future__ import annotations

import math

import pytest
import torch

from evl_kd_trainer.losses import relational_loss, relational_terms


def potentials(h: list[list[float]]) -> tuple[list[list[float]], list[list[float]]]:
    """psi_D (distance / mean off-diagonal distance) and psi_A (cosine) by explicit loops in Python floats."""
    n = len(h)
    dist = [[math.sqrt(sum((a - b) ** 2 for a, b in zip(h[i], h[j]))) for j in range(n)] for i in range(n)]
    off = [dist[i][j] for i in range(n) for j in range(n) if i != j]
    mu = sum(off) / len(off) if off else 0.0
    psi_d = [[d / mu if mu > 0 else d for d in row] for row in dist]
    norms = [max(math.sqrt(sum(a * a for a in v)), 1e-6) for v in h]
    psi_a = [[sum(a * b for a, b in zip(h[i], h[j])) / (norms[i] * norms[j]) for j in range(n)] for i in range(n)]
    return psi_d, psi_a


def reference_terms(teacher: torch.Tensor, student: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    sums, count = [0.0, 0.0], 0
    for b in range(teacher.shape[0]):
        rows = [i for i in range(teacher.shape[1]) if mask[b, i]]
        pt = potentials([teacher[b, i].tolist() for i in rows])
        ps = potentials([student[b, i].tolist() for i in rows])
        for k in range(2):
            sums[k] += sum((pt[k][i][j] - ps[k][i][j]) ** 2 for i in range(len(rows)) for j in range(len(rows)))
        count += len(rows) ** 2
    return sums[0] / count, sums[1] / count


def differentiable_reference(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """Equation (1) without padding by broadcasting differences (float64, autograd), for gradient checks."""

    def psi(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = h.shape[0]
        dist = ((h[:, None] - h[None, :]) ** 2).sum(-1).clamp_min(1e-300).sqrt() * (1 - torch.eye(n, dtype=h.dtype))
        unit = h / h.norm(dim=-1, keepdim=True)
        return dist / (dist.sum() / (n * (n - 1))), unit @ unit.T

    total = 0.0
    for b in range(teacher.shape[0]):
        (dt, at), (ds, as_) = psi(teacher[b]), psi(student[b])
        total = total + ((dt - ds) ** 2).sum() + ((at - as_) ** 2).sum()
    return 0.5 * total / (teacher.shape[0] * teacher.shape[1] ** 2)


@pytest.mark.parametrize("block_size", [None, 1, 3])
def test_matches_loops_with_padding_and_different_widths(block_size):
    # A large common offset checks that distances survive float32 cancellation in the Gram form.
    teacher = torch.randn(3, 6, 5, dtype=torch.float64) + 3.0
    student = torch.randn(3, 6, 7, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [0, 1, 0, 1, 1, 0]], dtype=torch.bool)
    loss_d, loss_a = relational_terms(teacher, student, mask, block_size=block_size)
    ref_d, ref_a = reference_terms(teacher, student, mask)
    assert loss_d.item() == pytest.approx(ref_d, rel=1e-10) and loss_a.item() == pytest.approx(ref_a, rel=1e-10)
    assert relational_loss(teacher, student, mask, block_size=block_size).item() == pytest.approx(
        (ref_d + ref_a) / 2, rel=1e-10
    )
    value32 = relational_loss(teacher.float(), student.float(), mask, block_size=block_size)
    assert value32.dtype == torch.float32 and value32.item() == pytest.approx((ref_d + ref_a) / 2, rel=1e-4)


@pytest.mark.parametrize("block_size", [None, 2])
def test_gradients_match_broadcast_reference(block_size):
    teacher = torch.randn(2, 5, 4, dtype=torch.float64, requires_grad=True)
    student = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    relational_loss(teacher, student, block_size=block_size).backward()
    gt, gs = torch.autograd.grad(differentiable_reference(teacher, student), (teacher, student))
    assert torch.allclose(teacher.grad, gt, atol=1e-10) and torch.allclose(student.grad, gs, atol=1e-10)


def test_padding_never_changes_value_and_gets_zero_gradient():
    teacher, student = torch.randn(2, 5, 4), torch.randn(2, 5, 6)
    mask = torch.tensor([[True, True, True, False, False], [True, False, True, True, False]])
    expected = relational_loss(teacher, student, mask)
    teacher[~mask] = float("nan")
    student[~mask] = float("inf")
    teacher.requires_grad_(True)
    student.requires_grad_(True)
    value = relational_loss(teacher, student, mask.long())
    assert torch.allclose(value, expected)
    value.backward()
    assert (teacher.grad[~mask] == 0).all() and (student.grad[~mask] == 0).all()
    assert torch.isfinite(teacher.grad).all() and (teacher.grad[mask] != 0).any()


def test_no_valid_position_gives_connected_zero():
    teacher = torch.randn(2, 3, 4, requires_grad=True)
    student = torch.randn(2, 3, 5, requires_grad=True)
    value = relational_loss(teacher, student, torch.zeros(2, 3, dtype=torch.bool))
    assert value.item() == 0.0 and value.requires_grad
    value.backward()
    assert (teacher.grad == 0).all() and (student.grad == 0).all()


@pytest.mark.parametrize("case", ["zero_vectors", "single_position", "identical_points", "duplicate_pair"])
def test_degenerate_inputs_give_finite_values_and_gradients(case):
    teacher, student = torch.randn(1, 4, 3), torch.randn(1, 4, 5)
    if case == "zero_vectors":
        teacher[0, :2] = 0.0
        student[0, 1] = 0.0
    elif case == "single_position":
        teacher, student = teacher[:, :1], student[:, :1]
    elif case == "identical_points":
        teacher[0, :] = teacher[0, 0].clone()
    else:
        student[0, 2] = student[0, 1]
    for block_size in (None, 1):
        t, s = teacher.clone().requires_grad_(True), student.clone().requires_grad_(True)
        value = relational_loss(t, s, block_size=block_size)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(t.grad).all() and torch.isfinite(s.grad).all()
    if case == "single_position":
        assert value.item() == pytest.approx(0.0, abs=1e-6)  # psi_D = 0, psi_A = 1 on both sides
    if case in ("identical_points", "duplicate_pair", "zero_vectors"):
        ref = sum(reference_terms(teacher.double(), student.double(), torch.ones(1, teacher.shape[1]))) / 2
        assert value.item() == pytest.approx(ref, rel=1e-4)


def test_bf16_inputs_are_computed_in_float32():
    teacher, student = torch.randn(2, 8, 6), torch.randn(2, 8, 4)
    tb, sb = teacher.bfloat16().requires_grad_(True), student.bfloat16().requires_grad_(True)
    value = relational_loss(tb, sb)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(relational_loss(tb.detach().float(), sb.detach().float()).item(), rel=1e-5)
    value.backward()
    assert tb.grad.dtype == torch.bfloat16 and torch.isfinite(tb.grad.float()).all()


def test_checkpointed_blocks_keep_less_memory_than_one_block():
    """Chunked runs keep O(block x L) for backward, not a stack of L x L matrices."""
    teacher = torch.randn(1, 256, 8, requires_grad=True)
    student = torch.randn(1, 256, 8, requires_grad=True)

    def saved_bytes(block_size: int) -> int:
        saved: dict[tuple[int, int], int] = {}  # unique storages: a tensor saved by several ops counts once

        def pack(t: torch.Tensor) -> torch.Tensor:
            saved[(t.untyped_storage().data_ptr(), t.numel())] = t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            relational_loss(teacher, student, block_size=block_size)
        return sum(saved.values())

    full, chunked = saved_bytes(256), saved_bytes(16)
    # One block keeps several 256 x 256 matrices (256 KiB each); checkpointed blocks keep ~the inputs.
    assert full > 4 * 256 * 256 * 4 and chunked < full / 8
