"""EM-KD: Hungarian vision-token matching, VSD (reverse KL) and VLAD (affinity SmoothL1)."""

import itertools
import math

import numpy as np
import pytest
import torch

from evl_kd_trainer.losses.emkd import affinity, hungarian_match, match_vision_tokens, vlad_loss, vsd_loss


def _softmax(x):
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()


def test_hungarian_match_is_optimal_against_brute_force():
    rng = np.random.default_rng(0)
    cost = rng.random((5, 3))  # 5 teacher tokens, 3 student tokens
    t_idx, s_idx = hungarian_match(torch.tensor(cost))
    assert s_idx.tolist() == [0, 1, 2]
    best = min(sum(cost[rows[i], i] for i in range(3)) for rows in itertools.permutations(range(5), 3))
    assert cost[t_idx.numpy(), s_idx.numpy()].sum() == pytest.approx(best)


@pytest.mark.parametrize("mode", ["same_vocab", "sorted_probs"])
def test_matching_recovers_a_known_permutation(mode):
    torch.manual_seed(0)
    # Student tokens with clearly different distributions (different sharpness), teacher = a
    # permutation of them plus far-away distractors.
    student = torch.randn(4, 10) * torch.tensor([[0.5], [1.5], [3.0], [6.0]])
    perm = torch.tensor([5, 2, 0, 3])
    teacher = torch.full((6, 10), 0.0)  # distractors: uniform distributions
    teacher[1] = torch.linspace(-20, 20, 10)
    teacher[perm] = student
    if mode == "sorted_probs":
        # Different vocabulary: permute the teacher's vocabulary and add impossible tokens.
        teacher = torch.cat([teacher[:, torch.randperm(10)], torch.full((6, 7), -1e4)], dim=1)
    t_idx, s_idx = match_vision_tokens(student, teacher, cross_vocab=mode, top_k=5)
    assert s_idx.tolist() == [0, 1, 2, 3]
    assert t_idx.tolist() == perm.tolist()


def test_same_vocab_mode_refuses_different_vocabularies():
    with pytest.raises(ValueError, match="equal vocabularies"):
        match_vision_tokens(torch.randn(2, 5), torch.randn(3, 6), cross_vocab="same_vocab")


def test_vsd_reverse_kl_matches_loop_and_zero_for_identical():
    torch.manual_seed(1)
    s, t = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    want = 0.0
    for n in range(3):
        p, q = _softmax(s[n]), _softmax(t[n])
        want += sum(p[k] * (math.log(p[k]) - math.log(q[k])) for k in range(6))  # KL(student || teacher)
    assert vsd_loss(s, t, cross_vocab="same_vocab").item() == pytest.approx(want / 3, rel=1e-5)
    assert vsd_loss(s, s, cross_vocab="same_vocab").item() == pytest.approx(0.0, abs=1e-7)


def test_vsd_sorted_probs_matches_loop_and_is_vocabulary_agnostic():
    torch.manual_seed(2)
    s, t = torch.randn(2, 8, dtype=torch.float64), torch.randn(2, 11, dtype=torch.float64)
    want = 0.0
    for n in range(2):
        p = np.sort(_softmax(s[n]))[::-1][:4]
        q = np.sort(_softmax(t[n]))[::-1][:4]
        p, q = p / p.sum(), q / q.sum()
        want += sum(p[k] * (math.log(p[k]) - math.log(q[k])) for k in range(4))
    assert vsd_loss(s, t, cross_vocab="sorted_probs", top_k=4).item() == pytest.approx(want / 2, rel=1e-5)
    same = torch.cat([s[:, torch.randperm(8)], torch.full((2, 3), -1e4, dtype=torch.float64)], dim=1)
    assert vsd_loss(s, same, cross_vocab="sorted_probs", top_k=4).item() == pytest.approx(0.0, abs=1e-7)


def test_vlad_matches_loop():
    torch.manual_seed(3)
    st, sv = torch.randn(3, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    tt, tv = torch.randn(3, 6, dtype=torch.float64), torch.randn(2, 6, dtype=torch.float64)

    def cos(a, b):
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))

    total = 0.0
    for r in range(3):
        for n in range(2):
            d = cos(st[r].numpy(), sv[n].numpy()) - cos(tt[r].numpy(), tv[n].numpy())
            total += 0.5 * d * d if abs(d) < 1 else abs(d) - 0.5
    assert vlad_loss(st, sv, tt, tv).item() == pytest.approx(total / 6, rel=1e-5)


def test_vlad_zero_for_same_geometry_in_different_widths():
    torch.manual_seed(4)
    st, sv = torch.randn(3, 4), torch.randn(5, 4)
    # Teacher space: scaled and zero-extended copies have the same cosine affinities.
    tt = torch.cat([2.5 * st, torch.zeros(3, 2)], dim=1)
    tv = torch.cat([0.3 * sv, torch.zeros(5, 2)], dim=1)
    assert vlad_loss(st, sv, tt, tv).item() == pytest.approx(0.0, abs=1e-6)
    assert affinity(st, sv).shape == (3, 5)


def test_gradients_flow_to_student_only_through_matched_tokens():
    torch.manual_seed(5)
    s_vis = torch.randn(3, 4, requires_grad=True)
    s_logits = s_vis @ torch.randn(4, 9)
    t_logits = torch.randn(5, 7)
    t_idx, s_idx = match_vision_tokens(s_logits.detach(), t_logits, "sorted_probs", top_k=5)
    loss = vsd_loss(s_logits[s_idx], t_logits[t_idx], "sorted_probs", top_k=5)
    loss = loss + vlad_loss(torch.randn(2, 4), s_vis[s_idx], torch.randn(2, 6), torch.randn(3, 6))
    loss.backward()
    assert torch.isfinite(s_vis.grad).all() and s_vis.grad.abs().sum() > 0
