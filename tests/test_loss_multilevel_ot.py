"""MultiLevelOT token- and sequence-level losses against float64 loops and an independent Sinkhorn."""

import math

import numpy as np
import pytest
import torch

from evl_kd_trainer.losses.alignment import align_response_spans
from evl_kd_trainer.losses.multilevel_ot import (
    mlot_sequence_loss,
    mlot_token_loss,
    sinkhorn_plan,
    standardize_logits,
    topk_sorted_log_probs,
)


def _topk_probs64(row, k, eps=1e-4):
    """Std-standardise (unbiased std), softmax over the full vocabulary, sort descending, keep k."""
    row = np.asarray(row, dtype=np.float64)
    z = row / (row.std(ddof=1) + eps)
    e = np.exp(z - z.max())
    return np.sort(e / e.sum())[::-1][:k]


def _token_reference(s_rows, t_rows, k, log_weight=0.1):
    total = 0.0
    for s, t in zip(s_rows, t_rows):
        p, q = _topk_probs64(s, k), _topk_probs64(t, k)
        l1 = sum(abs(a - c) for a, c in zip(p, q))
        ph, qh = p / p.sum(), q / q.sum()
        kl = sum(qh[i] * (math.log(qh[i]) - math.log(ph[i])) for i in range(k))
        total += l1 + log_weight * kl
    return total / len(s_rows)


def _sinkhorn_reference(cost, reg, n_iters):
    """Plain-domain Sinkhorn scaling, float64 (independent of the log-domain implementation)."""
    cost = np.asarray(cost, dtype=np.float64)
    n, m = cost.shape
    a, b = np.full(n, 1.0 / n), np.full(m, 1.0 / m)
    kernel = np.exp(-cost / reg)
    v = np.ones(m)
    for _ in range(n_iters):
        u = a / (kernel @ v)
        v = b / (kernel.T @ u)
    return u[:, None] * kernel * v[None, :]


def test_standardize_divides_by_unbiased_std_plus_eps():
    x = torch.tensor([[1.0, 2.0, 4.0, 7.0]])
    want = np.array([1.0, 2.0, 4.0, 7.0]) / (np.std([1.0, 2.0, 4.0, 7.0], ddof=1) + 1e-4)
    np.testing.assert_allclose(standardize_logits(x)[0].numpy(), want, rtol=1e-6)


def test_topk_is_softmax_over_full_vocab_then_truncated():
    x = torch.tensor([0.3, -1.0, 2.0, 0.7, 1.1])
    got = topk_sorted_log_probs(x, 3).exp().numpy()
    np.testing.assert_allclose(got, _topk_probs64(x.tolist(), 3), rtol=1e-5)
    assert got.sum() < 1.0  # not renormalised


def test_token_loss_matches_explicit_loop():
    torch.manual_seed(3)
    s_logits = torch.randn(2, 5, 9)
    t_logits = torch.randn(2, 6, 12)
    s_mask = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    t_mask = torch.tensor([[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 0, 0]], dtype=torch.bool)
    s, t, mask = align_response_spans(s_logits, s_mask, t_logits, t_mask)
    got = mlot_token_loss(s, t, mask, top_k=4).item()
    ref = []
    for b in range(2):
        s_rows = s_logits[b][s_mask[b]].tolist()
        t_rows = t_logits[b][t_mask[b]].tolist()
        n = min(len(s_rows), len(t_rows))
        ref.append(_token_reference(s_rows[:n], t_rows[:n], 4))
    assert got == pytest.approx(sum(ref) / 2, rel=1e-4)


def test_token_loss_zero_for_identical_and_positive_otherwise():
    torch.manual_seed(4)
    x = torch.randn(2, 3, 20)
    assert mlot_token_loss(x, x.clone()).item() == pytest.approx(0.0, abs=1e-6)
    # permuting the vocabulary keeps the sorted top-k (and the std) unchanged
    assert mlot_token_loss(x, x[..., torch.randperm(20)]).item() == pytest.approx(0.0, abs=1e-6)
    assert mlot_token_loss(x, torch.randn(2, 3, 20)).item() > 1e-3


def test_sinkhorn_plan_matches_plain_scaling_and_marginals():
    torch.manual_seed(5)
    cost = torch.rand(4, 6, dtype=torch.float64) * 2
    plan = sinkhorn_plan(cost, reg=0.1, n_iters=20)
    np.testing.assert_allclose(plan.numpy(), _sinkhorn_reference(cost.numpy(), 0.1, 20), rtol=1e-8, atol=1e-12)
    # the last update fits the column marginal exactly
    np.testing.assert_allclose(plan.sum(0).numpy(), np.full(6, 1 / 6), rtol=1e-10)


def test_sequence_loss_matches_reference_on_full_spans():
    torch.manual_seed(6)
    s_logits = torch.randn(2, 5, 10, dtype=torch.float64)
    t_logits = torch.randn(2, 7, 13, dtype=torch.float64)
    s_mask = torch.tensor([[0, 1, 1, 0, 0], [1, 1, 1, 1, 0]], dtype=torch.bool)
    t_mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [0, 1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    got = mlot_sequence_loss(s_logits, s_mask, t_logits, t_mask, top_k=5, reg=0.1, n_iters=20).item()
    ref = []
    for b in range(2):
        s_top = np.stack([_topk_probs64(r, 5) for r in s_logits[b][s_mask[b]].tolist()])
        t_top = np.stack([_topk_probs64(r, 5) for r in t_logits[b][t_mask[b]].tolist()])
        cost = np.abs(s_top[:, None, :] - t_top[None, :, :]).sum(-1)
        ref.append((_sinkhorn_reference(cost, 0.1, 20) * cost).sum())
    assert got == pytest.approx(float(np.mean(ref)), rel=1e-6)


def test_sequence_loss_ignores_masked_positions_and_has_finite_gradients():
    torch.manual_seed(7)
    s = torch.randn(1, 4, 8, requires_grad=True)
    t = torch.randn(1, 5, 8)
    s_mask = torch.tensor([[1, 1, 0, 0]], dtype=torch.bool)
    t_mask = torch.tensor([[0, 1, 1, 1, 0]], dtype=torch.bool)
    base = mlot_sequence_loss(s, s_mask, t, t_mask)
    s2 = s.detach().clone()
    s2[0, 2:] = 30.0
    t2 = t.clone()
    t2[0, 0] = -30.0
    assert mlot_sequence_loss(s2, s_mask, t2, t_mask).item() == pytest.approx(base.item())
    base.backward()
    assert torch.isfinite(s.grad).all() and s.grad[0, :2].abs().sum() > 0 and s.grad[0, 2:].abs().sum() == 0


def test_empty_spans_give_zero():
    s = torch.randn(1, 3, 6, requires_grad=True)
    loss = mlot_sequence_loss(s, torch.zeros(1, 3, dtype=torch.bool), torch.randn(1, 3, 6), torch.ones(1, 3).bool())
    assert loss.item() == 0.0
    loss.backward()
