"""Cross-attention aligner (paper section 2.2) against an explicit per-head implementation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from evl_kd_trainer.aligners import CrossAttentionAligner, VisualProjector


def reference_aligned(
    aligner: CrossAttentionAligner, student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """head_i = softmax((H_s W_i^Q)(H_t W_i^K)^T / sqrt(d_k)) (H_t W_i^V), loops over samples and heads, float64."""
    w = {name: (lin.weight.double(), lin.bias.double()) for name, lin in aligner.named_children()}
    h, dk = aligner.num_heads, aligner.head_dim
    out = []
    for b in range(student.shape[0]):
        hs, ht = student[b].double(), teacher[b].double()[mask[b]]
        q = hs @ w["q_proj"][0].T + w["q_proj"][1]
        k = ht @ w["k_proj"][0].T + w["k_proj"][1]
        v = ht @ w["v_proj"][0].T + w["v_proj"][1]
        heads = []
        for i in range(h):
            cols = slice(i * dk, (i + 1) * dk)
            scores = torch.einsum("qd,kd->qk", q[:, cols], k[:, cols]) / math.sqrt(dk)
            heads.append(torch.softmax(scores, dim=-1) @ v[:, cols])
        out.append(torch.cat(heads, dim=-1) @ w["o_proj"][0].T + w["o_proj"][1])
    return torch.stack(out)


def test_layers_are_linear_with_bias_and_shapes():
    aligner = CrossAttentionAligner(student_dim=8, teacher_dim=12, num_heads=4)
    for name, (fan_in, fan_out) in {"q_proj": (8, 8), "k_proj": (12, 8), "v_proj": (12, 8), "o_proj": (8, 8)}.items():
        layer = getattr(aligner, name)
        assert isinstance(layer, nn.Linear) and layer.bias is not None
        assert (layer.in_features, layer.out_features) == (fan_in, fan_out)
    assert not any(isinstance(m, nn.MultiheadAttention) for m in aligner.modules())


@pytest.mark.parametrize("num_heads", [1, 2, 4])
def test_matches_explicit_per_head_reference(num_heads):
    aligner = CrossAttentionAligner(8, 12, num_heads=num_heads)
    student, teacher = torch.randn(3, 5, 8), torch.randn(3, 7, 12)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 4:] = False
    mask[2, 0] = False
    out = aligner(student, teacher, teacher_mask=mask)
    assert out.shape == (3, 5, 8) and out.dtype == torch.float32
    assert torch.allclose(out.double(), reference_aligned(aligner, student, teacher, mask), atol=1e-5)
    unmasked = aligner(student, teacher)
    full = torch.ones(3, 7, dtype=torch.bool)
    assert torch.allclose(unmasked.double(), reference_aligned(aligner, student, teacher, full), atol=1e-5)


def test_masked_teacher_tokens_do_not_change_output_or_get_gradient():
    aligner = CrossAttentionAligner(8, 6, num_heads=2)
    student, teacher = torch.randn(2, 4, 8), torch.randn(2, 5, 6)
    mask = torch.tensor([[True, True, True, False, False], [True, False, True, False, True]])
    expected = aligner(student, teacher, mask)
    garbage = teacher.clone()
    garbage[~mask] = 1e4 * torch.randn(int((~mask).sum()), 6)
    garbage.requires_grad_(True)
    out = aligner(student, garbage, mask)
    assert torch.allclose(out, expected, atol=1e-6)
    out.pow(2).sum().backward()
    assert (garbage.grad[~mask] == 0).all() and (garbage.grad[mask] != 0).any()


@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_nonfinite_padding_never_reaches_output_or_gradients(poison):
    aligner = CrossAttentionAligner(8, 6, num_heads=2)
    student, teacher = torch.randn(2, 4, 8), torch.randn(2, 5, 6)
    mask = torch.tensor([[True, True, True, False, False], [True, False, True, False, True]])
    expected = aligner(student, teacher, mask)
    poisoned = teacher.clone()
    poisoned[~mask] = poison
    poisoned.requires_grad_(True)
    out = aligner(student, poisoned, mask)
    assert torch.allclose(out, expected, atol=1e-6)
    out.pow(2).sum().backward()
    assert torch.isfinite(poisoned.grad).all() and (poisoned.grad[~mask] == 0).all()
    assert all(torch.isfinite(p.grad).all() for p in aligner.parameters())


def test_fully_masked_sample_gives_zeros_not_nan():
    aligner = CrossAttentionAligner(8, 6, num_heads=2)
    student, teacher = torch.randn(2, 3, 8, requires_grad=True), torch.randn(2, 4, 6)
    mask = torch.tensor([[False] * 4, [True, True, False, True]])
    out = aligner(student, teacher, mask)
    assert torch.isfinite(out).all() and (out[0] == 0).all()
    assert torch.allclose(out[1:], aligner(student[1:], teacher[1:], mask[1:]), atol=1e-6)
    out.sum().backward()
    assert torch.isfinite(student.grad).all() and (student.grad[0] == 0).all()


def test_computes_in_weight_dtype():
    aligner = CrossAttentionAligner(8, 6, num_heads=2).to(torch.bfloat16)
    # float32 and float64 inputs are both cast to the weights' bf16.
    assert aligner(torch.randn(1, 3, 8), torch.randn(1, 4, 6, dtype=torch.float64)).dtype == torch.bfloat16


def test_bf16_matches_float32_within_bf16_precision():
    aligner = CrossAttentionAligner(16, 8, num_heads=4)
    student, teacher = torch.randn(2, 5, 16), torch.randn(2, 6, 8)
    ref = aligner(student, teacher)
    out = aligner.to(torch.bfloat16)(student.bfloat16(), teacher.bfloat16())
    assert out.dtype == torch.bfloat16 and torch.allclose(out.float(), ref, atol=5e-2, rtol=5e-2)


def test_heads_must_divide_student_width():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        CrossAttentionAligner(10, 6, num_heads=4)


def test_wrong_widths_and_batches_are_rejected():
    aligner = CrossAttentionAligner(8, 6, num_heads=2)
    with pytest.raises(ValueError, match="D_t=6"):
        aligner(torch.randn(1, 3, 8), torch.randn(1, 4, 7))
    with pytest.raises(ValueError, match="batch size"):
        aligner(torch.randn(2, 3, 8), torch.randn(1, 4, 6))
    with pytest.raises(ValueError, match="teacher_mask"):
        aligner(torch.randn(1, 3, 8), torch.randn(1, 4, 6), torch.ones(1, 3, dtype=torch.bool))


def test_visual_projector_is_a_biased_linear_map():
    proj = VisualProjector(teacher_dim=12, student_dim=8)
    assert isinstance(proj.proj, nn.Linear) and proj.proj.bias is not None
    x = torch.randn(2, 5, 12)
    expected = x.double() @ proj.proj.weight.double().T + proj.proj.bias.double()
    assert torch.allclose(proj(x).double(), expected, atol=1e-6)
