"""ULD loss and the response-span alignment it relies on, against hand-computed values and explicit loops."""

import math

import pytest
import torch

from evl_kd_trainer.losses.alignment import align_response_spans, gather_response_positions, masked_sample_mean
from evl_kd_trainer.losses.uld import sorted_l1, uld_loss


def _softmax64(row):
    m = max(row)
    e = [math.exp(v - m) for v in row]
    z = sum(e)
    return [v / z for v in e]


def _uld_reference(s_logits, s_mask, t_logits, t_mask):
    """ULD by explicit loops: per sample, i-th response position of each side, sorted, zero-padded, L1."""
    per_sample = []
    for b in range(len(s_logits)):
        s_rows = [s_logits[b][i] for i in range(len(s_mask[b])) if s_mask[b][i]]
        t_rows = [t_logits[b][j] for j in range(len(t_mask[b])) if t_mask[b][j]]
        n = min(len(s_rows), len(t_rows))
        if n == 0:
            continue
        total = 0.0
        for i in range(n):
            p = sorted(_softmax64(s_rows[i]), reverse=True)
            q = sorted(_softmax64(t_rows[i]), reverse=True)
            size = max(len(p), len(q))
            p += [0.0] * (size - len(p))
            q += [0.0] * (size - len(q))
            total += sum(abs(a - c) for a, c in zip(p, q))
        per_sample.append(total / n)
    return sum(per_sample) / len(per_sample)


def test_gather_response_positions_packs_in_order_and_zero_pads():
    x = torch.arange(2 * 5, dtype=torch.float32).reshape(2, 5, 1)
    mask = torch.tensor([[0, 1, 0, 1, 1], [0, 0, 1, 0, 0]], dtype=torch.bool)
    packed, packed_mask = gather_response_positions(x, mask)
    assert packed.squeeze(-1).tolist() == [[1.0, 3.0, 4.0], [7.0, 0.0, 0.0]]
    assert packed_mask.tolist() == [[True, True, True], [True, False, False]]


def test_align_response_spans_truncates_each_sample_to_its_shorter_span():
    s = torch.arange(12, dtype=torch.float32).reshape(2, 6, 1)
    t = 100 + torch.arange(8, dtype=torch.float32).reshape(2, 4, 1)
    s_mask = torch.tensor([[0, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    t_mask = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1]], dtype=torch.bool)
    s_al, t_al, mask = align_response_spans(s, s_mask, t, t_mask)
    # sample 0: student span 3, teacher 2 -> 2 pairs; sample 1: student 2, teacher 3 -> 2 pairs
    assert mask.tolist() == [[True, True], [True, True]]
    assert s_al.squeeze(-1).tolist() == [[1.0, 2.0], [6.0, 7.0]]
    assert t_al.squeeze(-1).tolist() == [[100.0, 101.0], [105.0, 106.0]]


def test_masked_sample_mean_averages_per_sample_then_over_samples():
    values = torch.tensor([[1.0, 3.0, 50.0], [4.0, 60.0, 70.0], [9.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    # sample means 2 and 4; the empty third sample is skipped
    assert masked_sample_mean(values, mask).item() == pytest.approx(3.0)


def test_uld_hand_checked_value():
    # student [0.5, 0.5]; teacher [0.6, 0.3, 0.1]: |0.5-0.6| + |0.5-0.3| + |0-0.1| = 0.4
    s = torch.zeros(1, 1, 2)
    t = torch.log(torch.tensor([[[0.3, 0.6, 0.1]]]))
    assert uld_loss(s, t).item() == pytest.approx(0.4, abs=1e-6)


def test_uld_matches_explicit_loop_with_masks_and_different_vocab_sizes():
    torch.manual_seed(1)
    s_logits = torch.randn(2, 6, 5, dtype=torch.float64)
    t_logits = torch.randn(2, 7, 8, dtype=torch.float64)
    s_mask = torch.tensor([[0, 1, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    t_mask = torch.tensor([[1, 1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 1, 1, 0]], dtype=torch.bool)
    s, t, mask = align_response_spans(s_logits, s_mask, t_logits, t_mask)
    got = uld_loss(s, t, mask).item()
    want = _uld_reference(s_logits.tolist(), s_mask.tolist(), t_logits.tolist(), t_mask.tolist())
    assert got == pytest.approx(want, rel=1e-5)


def test_uld_zero_for_same_sorted_probabilities_across_vocab_sizes():
    # Teacher = student's distribution, permuted, plus two impossible extra tokens.
    s = torch.tensor([[[2.0, 0.5, -1.0, 1.0]]])
    t = torch.tensor([[[1.0, -1e4, 2.0, -1.0, -1e4, 0.5]]])
    assert uld_loss(s, t).item() == pytest.approx(0.0, abs=1e-6)
    assert uld_loss(s, t).item() >= 0.0


def test_sorted_l1_equals_zero_padded_l1():
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.4, 0.25, 0.2, 0.1, 0.05])
    padded = torch.cat([p, torch.zeros(2)])
    assert sorted_l1(p, q).item() == pytest.approx((padded - q).abs().sum().item())
    assert sorted_l1(q, p).item() == pytest.approx(sorted_l1(p, q).item())


def test_uld_ignores_masked_positions_and_has_finite_gradients():
    torch.manual_seed(2)
    s = torch.randn(2, 3, 6, requires_grad=True)
    t = torch.randn(2, 3, 9)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    base = uld_loss(s, t, mask)
    s2 = s.detach().clone()
    s2[0, 2] = 100.0  # outside the mask
    s2[1, 1:] = -50.0
    assert uld_loss(s2, t, mask).item() == pytest.approx(base.item())
    base.backward()
    assert torch.isfinite(s.grad).all()
    assert s.grad[0, 2].abs().sum() == 0 and s.grad[1, 1:].abs().sum() == 0


def test_uld_without_any_aligned_position_is_zero_and_differentiable():
    s = torch.randn(1, 2, 4, requires_grad=True)
    loss = uld_loss(s, torch.randn(1, 2, 3), torch.zeros(1, 2, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(s.grad).all()
