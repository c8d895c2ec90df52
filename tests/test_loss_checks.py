"""Argument validation of the EVL-ECG terms (issue 2, item 8) and a smoke run of the benchmark."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evl_kd_trainer.losses import mhca_loss, relational_loss, sinkhorn_ot_loss, sinkhorn_plan
from evl_kd_trainer.losses._checks import check_mask, zero_connected

REPO = Path(__file__).resolve().parents[1]


def t(*shape: int) -> torch.Tensor:
    return torch.randn(*shape)


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: sinkhorn_ot_loss(t(4, 3), t(2, 4, 3)), r"teacher_tokens .*\(B, N, D\).*\(4, 3\)"),
        (lambda: sinkhorn_ot_loss(t(2, 4, 3), t(2, 4, 3, 1)), r"student_tokens .*\(2, 4, 3, 1\)"),
        (
            lambda: sinkhorn_ot_loss(t(2, 4, 3), t(3, 4, 3)),
            r"batch size: teacher_tokens \(2, 4, 3\), student_tokens \(3",
        ),
        (lambda: sinkhorn_ot_loss(t(2, 4, 5), t(2, 4, 3)), r"width D .*\(2, 4, 5\).*\(2, 4, 3\)"),
        (lambda: sinkhorn_ot_loss(t(2, 4, 3), t(2, 5, 3), torch.ones(2, 5)), r"teacher_mask .*\(2, 4\).*\(2, 5\)"),
        (lambda: sinkhorn_ot_loss(t(2, 4, 3), t(2, 5, 3), None, torch.full((2, 5), 0.5)), r"student_mask .*0 and 1"),
        (lambda: sinkhorn_ot_loss(t(2, 4, 3), t(2, 5, 3), epsilon=0.0), r"epsilon .*> 0"),
        (lambda: sinkhorn_ot_loss(t(2, 4, 3), t(2, 5, 3), epsilon=-1), r"epsilon"),
        (lambda: sinkhorn_ot_loss(t(2, 4, 3), t(2, 5, 3), tol=0), r"tol"),
        (lambda: sinkhorn_ot_loss(t(2, 4, 3), t(2, 5, 3), max_iter=-1), r"max_iter"),
        (lambda: sinkhorn_ot_loss(torch.ones(2, 4, 3, dtype=torch.long), t(2, 5, 3)), r"teacher_tokens .*floating"),
        (lambda: sinkhorn_plan(t(1, 4, 3), t(5, 3)), r"teacher_tokens .*\(N, D\)"),
        (lambda: sinkhorn_plan(t(4, 3), t(5, 2)), r"width D"),
        (lambda: mhca_loss(t(2, 3, 4), t(2, 3, 5)), r"student_hidden \(2, 3, 4\) and aligned_teacher \(2, 3, 5\)"),
        (lambda: mhca_loss(t(2, 3, 4), t(2, 4, 4)), r"same shape"),
        (lambda: mhca_loss(t(3, 4), t(3, 4)), r"student_hidden .*rank 3"),
        (lambda: mhca_loss(t(2, 3, 4), t(2, 3, 4), reduction="avg"), r"reduction .*'mean', 'sum'.*'avg'"),
        (lambda: mhca_loss(t(2, 3, 4), t(2, 3, 4), torch.ones(3, 2)), r"mask .*\(2, 3\).*\(3, 2\)"),
        (lambda: mhca_loss(t(2, 3, 4), t(2, 3, 4), [[1, 1, 1]] * 2), r"mask must be a torch.Tensor"),
        (lambda: relational_loss(t(2, 3, 4), t(2, 4, 4)), r"length: teacher_hidden \(2, 3, 4\), student_hidden \(2, 4"),
        (lambda: relational_loss(t(2, 3, 4), t(1, 3, 4)), r"batch size"),
        (lambda: relational_loss(t(3, 4), t(2, 3, 4)), r"teacher_hidden .*\(B, L, D_t\)"),
        (lambda: relational_loss(t(2, 3, 4), t(2, 3, 6), torch.ones(2, 3, 1)), r"mask .*\(2, 3\)"),
        (lambda: relational_loss(t(2, 3, 4), t(2, 3, 6), torch.ones(2, 3, dtype=torch.complex64)), r"mask .*boolean"),
        (lambda: relational_loss(t(2, 3, 4), t(2, 3, 6), block_size=0), r"block_size"),
    ],
)
def test_bad_arguments_raise_value_error_naming_argument_and_shapes(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


def test_checks_run_before_heavy_work(monkeypatch):
    """A bad mask is refused before the solver is touched."""
    import evl_kd_trainer.losses.ot as ot

    def boom(*args, **kwargs):  # pragma: no cover - must not be reached
        raise AssertionError("solver reached")

    monkeypatch.setattr(ot, "_entropic_plan", boom)
    with pytest.raises(ValueError, match="teacher_mask"):
        sinkhorn_ot_loss(t(1, 4, 3), t(1, 2, 3), torch.ones(1, 5))


def test_check_mask_converts_zero_one_masks_to_bool():
    assert check_mask("m", None, (2, 3)) is None
    out = check_mask("m", torch.tensor([[1.0, 0.0, 1.0]]), (1, 3))
    assert out.dtype == torch.bool and out.tolist() == [[True, False, True]]
    with pytest.raises(ValueError, match="only 0 and 1"):
        check_mask("m", torch.tensor([[2, 0, 1]]), (1, 3))


def test_zero_connected_is_nan_safe_and_differentiable():
    x = torch.full((2, 3), float("nan"), requires_grad=True)
    z = zero_connected(x)
    assert z.item() == 0.0 and z.requires_grad
    z.backward()
    assert (x.grad == 0).all()


def test_benchmark_quick_smoke_run():
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_losses.py"), "--quick", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 6  # header + five cases
    for term in ("OT (sinkhorn_ot)", "MHCA (aligner + mhca)", "relational"):
        assert any(row.startswith(f"| {term} |") for row in rows)
    for row in rows[1:]:
        median = float(row.split("|")[3])
        assert median > 0
