"""DSKD-CMA terms against a float64 loop implementation; KL and attention-mask properties."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from evl_kd_trainer.losses.dskd import (
    cross_model_attention_scores,
    dskd_cma_terms,
    dskd_kl_loss,
    forward_kl,
    masked_mean,
)


def _softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def _kl(p_logits, q_logits, temperature):
    """KL(softmax(p/T) || softmax(q/T)) by an explicit sum."""
    p, q = _softmax(p_logits / temperature), _softmax(q_logits / temperature)
    return sum(p[k] * (math.log(p[k]) - math.log(q[k])) for k in range(len(p)))


def test_forward_kl_matches_loop_and_is_zero_for_identical():
    torch.manual_seed(0)
    s, t = torch.randn(3, 7, dtype=torch.float64), torch.randn(3, 7, dtype=torch.float64)
    got = forward_kl(s, t, temperature=2.0)
    for i in range(3):
        assert got[i].item() == pytest.approx(_kl(t[i].numpy(), s[i].numpy(), 2.0), rel=1e-5)
    assert forward_kl(s, s, 2.0).abs().max().item() < 1e-6


def test_masked_mean_counts_weights_in_numerator_only():
    values = torch.tensor([1.0, 2.0, 3.0, 4.0])
    mask = torch.tensor([True, True, True, False])
    weights = torch.tensor([True, False, True, True])
    assert masked_mean(values, mask, weights).item() == pytest.approx((1.0 + 3.0) / 3)


def test_dskd_kl_is_registered_and_masks():
    s, t = torch.randn(1, 3, 5), torch.randn(1, 3, 5)
    mask = torch.tensor([[True, False, True]])
    want = (forward_kl(s, t, 2.0)[0, 0] + forward_kl(s, t, 2.0)[0, 2]) / 2
    assert dskd_kl_loss(s, t, mask).item() == pytest.approx(want.item(), rel=1e-6)


def test_attention_scores_scale_and_mask():
    q = torch.tensor([[[1.0, 2.0, 0.0, 1.0]]])
    k = torch.tensor([[[1.0, 1.0, 1.0, 1.0], [0.0, 2.0, 0.0, 0.0]]])
    scores = cross_model_attention_scores(q, k, torch.tensor([[True]]), torch.tensor([[True, False]]))
    assert scores[0, 0, 0].item() == pytest.approx(4.0 / 2.0)  # <q,k> / sqrt(4)
    assert scores[0, 0, 1].item() == -1e5


def _setup(seed=1):
    torch.manual_seed(seed)
    b, rs, rt, ds, dt, vs, vt = 2, 3, 4, 3, 4, 6, 5
    dd = torch.float64
    data = {
        "student_hidden": torch.randn(b, rs, ds, dtype=dd),
        "student_logits": torch.randn(b, rs, vs, dtype=dd),
        "student_index_embeds": torch.randn(b, rs, 2 * ds, dtype=dd),
        "student_mask": torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool),
        "teacher_hidden": torch.randn(b, rt, dt, dtype=dd),
        "teacher_logits": torch.randn(b, rt, vt, dtype=dd),
        "teacher_index_embeds": torch.randn(b, rt, 2 * dt, dtype=dd),
        "teacher_target_embeds": torch.randn(b, rt, dt, dtype=dd),
        "teacher_mask": torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool),
    }
    mods = {
        "q": nn.Linear(2 * ds, 2 * dt).double(),
        "t2s": nn.Linear(dt, ds).double(),
        "s2t": nn.Linear(ds, dt).double(),
        "sh": torch.randn(vs, ds, dtype=dd),
        "th": torch.randn(vt, dt, dtype=dd),
    }
    return data, mods


def _reference(data, mods, targets, temperature):
    """The equations of the DSKD-CMA module docstring with explicit per-position loops (float64)."""
    np_ = {k: v.detach().numpy().astype(np.float64) for k, v in data.items()}
    w = {k: (m.weight.detach().numpy(), m.bias.detach().numpy()) for k, m in mods.items() if isinstance(m, nn.Linear)}
    sh, th = mods["sh"].numpy(), mods["th"].numpy()
    s_mask, t_mask = np_["student_mask"].astype(bool), np_["teacher_mask"].astype(bool)
    std_k = np_["teacher_index_embeds"][t_mask].std(ddof=1)
    std_h = np_["teacher_hidden"][t_mask].std(ddof=1)
    std_e = np_["teacher_target_embeds"][t_mask].std(ddof=1)
    ce, stu_kl, tea_kl, n_s, t2s_all = 0.0, 0.0, 0.0, 0, {}
    for b in range(s_mask.shape[0]):
        si = [i for i in range(s_mask.shape[1]) if s_mask[b, i]]
        tj = [j for j in range(t_mask.shape[1]) if t_mask[b, j]]
        scores = np.zeros((len(si), len(tj)))
        for a, i in enumerate(si):
            q = w["q"][0] @ np_["student_index_embeds"][b, i] + w["q"][1]
            for c, j in enumerate(tj):
                scores[a, c] = q @ (np_["teacher_index_embeds"][b, j] / std_k) / math.sqrt(q.shape[0])
        for a, i in enumerate(si):
            att = _softmax(scores[a])
            h = sum(
                att[c]
                * (
                    w["t2s"][0] @ (np_["teacher_hidden"][b, j] / std_h + np_["teacher_target_embeds"][b, j] / std_e)
                    + w["t2s"][1]
                )
                for c, j in enumerate(tj)
            )
            z = sh @ h
            t2s_all[(b, i)] = z
            if targets is not None:
                ce += -math.log(_softmax(z)[targets[b, i]])
                if int(np.argmax(z)) == targets[b, i]:
                    stu_kl += _kl(z, np_["student_logits"][b, i], temperature)
            n_s += 1
        for c, j in enumerate(tj):
            att = _softmax(scores[:, c])
            h = sum(att[a] * (w["s2t"][0] @ np_["student_hidden"][b, i] + w["s2t"][1]) for a, i in enumerate(si))
            tea_kl += _kl(np_["teacher_logits"][b, j], th @ h, temperature)
    # every term is a sum divided by the number of student answer tokens (the authors' `loss_denom`)
    return {"t2s_ce": ce / n_s, "student_space": stu_kl / n_s, "teacher_space": tea_kl / n_s}, t2s_all


def _call(data, mods, targets, temperature=2.0):
    return dskd_cma_terms(
        **data,
        student_targets=targets,
        student_head=lambda h: h.double() @ mods["sh"].T,
        teacher_head=lambda h: h.double() @ mods["th"].T,
        query_proj=mods["q"],
        t2s_proj=mods["t2s"],
        s2t_proj=mods["s2t"],
        temperature=temperature,
    )


def test_cma_terms_match_explicit_loops():
    data, mods = _setup()
    _, t2s = _reference(data, mods, None, 2.0)
    # Half the targets are what the t2s logits predict (so the student-space KL counts them), half not.
    targets = torch.zeros(2, 3, dtype=torch.long)
    for (b, i), z in t2s.items():
        best = int(np.argmax(z))
        targets[b, i] = best if (b + i) % 2 == 0 else (best + 1) % z.shape[0]
    want, _ = _reference(data, mods, targets.numpy(), 2.0)
    got = _call(data, mods, targets)
    for key in want:
        assert got[key].item() == pytest.approx(want[key], rel=1e-4, abs=1e-7), key
    assert got["student_space"].item() > 0


def test_student_space_term_is_zero_when_projection_never_predicts_the_target():
    data, mods = _setup(2)
    _, t2s = _reference(data, mods, None, 2.0)
    targets = torch.zeros(2, 3, dtype=torch.long)
    for (b, i), z in t2s.items():
        targets[b, i] = (int(np.argmax(z)) + 1) % z.shape[0]
    assert _call(data, mods, targets)["student_space"].item() == 0.0


def test_sample_without_teacher_answer_is_dropped_and_gradients_are_finite():
    data, mods = _setup(3)
    targets = torch.zeros(2, 3, dtype=torch.long)
    data["teacher_mask"] = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    data["student_hidden"].requires_grad_(True)
    terms = _call(data, mods, targets)
    # Sample 1 has no teacher answer: changing its student features must not matter.
    data2 = dict(data)
    data2["student_logits"] = data["student_logits"].clone()
    data2["student_logits"][1] = 40.0
    terms2 = _call(data2, mods, targets)
    for key in terms:
        assert terms[key].item() == pytest.approx(terms2[key].item(), rel=1e-6)
    sum(terms.values()).backward()
    for p in [*mods["q"].parameters(), *mods["t2s"].parameters(), *mods["s2t"].parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all()
    assert torch.isfinite(data["student_hidden"].grad).all()
