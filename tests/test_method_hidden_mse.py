"""The hidden_mse method (FitNets), added as one folder with no edit to the core: loss, method, trainer run."""

from __future__ import annotations

import pytest
import torch

from evl_kd_trainer.methods import DistillFeatures, ModelDims, get_method
from evl_kd_trainer.methods.hidden_mse import hidden_mse_loss
from evl_kd_trainer.testing.method_args import method_args
from tests.test_trainer import make_trainer, step_logs


def _reference(student, teacher, mask):
    """Explicit loop over the aligned pairs and features (float64)."""
    total, count = 0.0, 0
    for b in range(student.shape[0]):
        for i in range(student.shape[1]):
            if mask[b, i]:
                for d in range(student.shape[2]):
                    total += (float(student[b, i, d]) - float(teacher[b, i, d])) ** 2
                    count += 1
    return total / count


def test_loss_matches_an_explicit_loop_and_ignores_unaligned_rows():
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(3, 5, 4, generator=g), torch.randn(3, 5, 4, generator=g)
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    assert hidden_mse_loss(student, teacher, mask).item() == pytest.approx(_reference(student, teacher, mask), rel=1e-6)
    student[~mask] = 1e6  # rows outside the mask never count
    assert hidden_mse_loss(student, teacher, mask).item() == pytest.approx(_reference(student, teacher, mask), rel=1e-6)
    empty = hidden_mse_loss(student.requires_grad_(True), teacher, torch.zeros_like(mask))
    assert empty.item() == 0.0 and empty.requires_grad


def test_method_pairs_the_ith_answer_tokens_and_projects_the_teacher():
    ds, dt = 6, 10
    method = get_method("hidden_mse")(method_args(kd_method="hidden_mse"), ModelDims(ds, ds, 50), ModelDims(dt, dt, 40))
    g = torch.Generator().manual_seed(1)
    s_hidden = torch.randn(2, 7, ds, generator=g, requires_grad=True)
    t_hidden = torch.randn(2, 9, dt, generator=g)
    s_resp = torch.zeros(2, 7, dtype=torch.bool)
    s_resp[0, 3:6], s_resp[1, 2:7] = True, True  # 3 and 5 answer tokens
    t_resp = torch.zeros(2, 9, dtype=torch.bool)
    t_resp[0, 4:9], t_resp[1, 6:8] = True, True  # 5 and 2: pairs 3 and 2
    ones_s, ones_t = torch.ones(2, 7, dtype=torch.bool), torch.ones(2, 9, dtype=torch.bool)
    features = DistillFeatures(s_hidden, ones_s, s_resp, t_hidden, ones_t, t_resp)
    terms = method(features)
    with torch.no_grad():
        projected = method.projector(t_hidden)
    pairs = [(0, 3, 4), (0, 4, 5), (0, 5, 6), (1, 2, 6), (1, 3, 7)]
    expected = torch.stack([(s_hidden[b, i] - projected[b, j]).pow(2).mean() for b, i, j in pairs]).mean()
    assert terms["hidden_mse_loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert terms["kd_loss"].item() == pytest.approx(terms["hidden_mse_loss"].item())  # lambda 1.0
    terms["kd_loss"].backward()
    grad = s_hidden.grad.abs().sum(-1)
    used = torch.zeros(2, 7, dtype=torch.bool)
    for b, i, _ in pairs:
        used[b, i] = True
    assert bool((grad[used] > 0).all()) and bool((grad[~used] == 0).all())
    assert method.total_loss(torch.tensor(2.0), terms).item() == pytest.approx(
        0.7 * 2.0 + 0.3 * terms["kd_loss"].item()
    )


def test_distils_through_the_trainer_and_its_projector_learns(tmp_path):
    trainer = make_trainer(tmp_path, kd_method="hidden_mse", hidden_mse_lambda=2.0, max_steps=3)
    before = trainer.kd_method.projector.weight.detach().clone()
    trainer.train()
    logs = step_logs(trainer)
    assert len(logs) == 3 and all(entry["hidden_mse_loss"] > 0 for entry in logs)
    assert not torch.equal(before, trainer.kd_method.projector.weight.detach())
    assert trainer.kd_request.visual is False and trainer.kd_request.teacher_logits is False
    assert get_method("hidden_mse").active_for(method_args(hidden_mse_lambda=0.0)) is False
