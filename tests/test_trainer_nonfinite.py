"""A NaN gradient behind a finite loss (what a diverging learning rate gives) never reaches the weights or the disk.

The faults are injected into the tiny models themselves: a gradient hook on one student weight turns its gradient
into NaN at chosen updates (the forward, and so the loss, stays finite), or a forward hook on the teacher's
projector makes the loss NaN.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from transformers import TrainerCallback

from evl_kd_trainer.testing import build_tiny_llava_next, build_tiny_qwen3_vl
from tests.test_trainer import make_trainer, step_logs

POISONED = "model.language_model.layers.0.mlp.down_proj.weight"


def poison_gradient(model: torch.nn.Module, at_updates: set[int] | None) -> list[int]:
    """The gradient of one weight becomes NaN at the given updates (1-based; None: every update)."""
    calls: list[int] = []
    param = dict(model.named_parameters())[POISONED]

    def hook(grad: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return grad * float("nan") if at_updates is None or len(calls) in at_updates else grad

    param.register_hook(hook)
    return calls


class Snapshots(TrainerCallback):
    """Every weight of the student (aligners included) after each update."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.after = model, []

    def on_step_end(self, args, state, control, **kwargs):
        self.after.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})


def all_finite(state: dict[str, torch.Tensor]) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.parametrize("max_grad_norm", [1.0, 0.0])  # clipped, or no clipping (the norm is computed anyway)
def test_error_stops_before_a_nan_gradient_changes_any_weight(tmp_path, max_grad_norm):
    student = build_tiny_qwen3_vl(seed=0)
    poison_gradient(student[0], {2})
    trainer = make_trainer(
        tmp_path, student=student, max_steps=3, save_strategy="steps", save_steps=1, max_grad_norm=max_grad_norm
    )
    snapshots = Snapshots(trainer.model)
    trainer.add_callback(snapshots)
    with pytest.raises(FloatingPointError, match=r"global step 1: gradient norm=nan \(the loss terms were finite\)"):
        trainer.train()
    assert len(snapshots.after) == 1  # update 1 went through, update 2 was refused
    now = trainer.model.state_dict()
    assert all_finite(now)
    for key, value in snapshots.after[0].items():
        assert torch.equal(now[key], value), f"{key} changed by the refused update"
    out = tmp_path / "out"
    assert sorted(os.listdir(out)) == ["README.md", "checkpoint-1"]  # no checkpoint of a NaN model, no half folder


def test_skip_drops_the_nan_gradient_update_logs_the_real_loss_and_keeps_it_out_of_train_loss(tmp_path):
    student = build_tiny_qwen3_vl(seed=0)
    poison_gradient(student[0], {2})
    trainer = make_trainer(tmp_path, student=student, nonfinite_kd_action="skip", max_steps=4)
    snapshots = Snapshots(trainer.model)
    trainer.add_callback(snapshots)
    result = trainer.train()
    assert trainer.skipped_nonfinite_steps == 1
    for key, value in snapshots.after[1].items():
        assert torch.equal(value, snapshots.after[0][key]), f"{key} changed in the skipped update"
    assert any(not torch.equal(v, snapshots.after[1][k]) for k, v in snapshots.after[2].items()), "step 3 trained"
    assert all_finite(trainer.model.state_dict())
    logs = step_logs(trainer)
    assert [e["step"] for e in logs] == [1, 2, 3, 4]
    assert math.isnan(logs[1]["grad_norm"])
    # the skipped step's loss is its own (finite here: only the gradient was NaN), not 0.0
    skipped = logs[1]
    kd = skipped["mhca_loss"] + 0.03 * skipped["rel_loss"] + 0.1 * skipped["ot_loss"]
    assert skipped["loss"] == pytest.approx(0.7 * skipped["ce_loss"] + 0.3 * kd, rel=1e-5)
    assert [e.get("skipped_nonfinite_steps", 0) for e in logs] == [0, 1, 1, 1]
    kept = [logs[i]["loss"] for i in (0, 2, 3)]
    assert result.training_loss == pytest.approx(sum(kept) / 3, rel=1e-5)
    assert trainer.state.log_history[-1]["train_loss"] == pytest.approx(sum(kept) / 3, rel=1e-5)


def poison_teacher_loss(teacher: torch.nn.Module, at_calls: set[int]) -> None:
    calls: list[int] = []

    def hook(module, inputs, output):
        calls.append(1)
        return output * float("nan") if len(calls) in at_calls else output

    teacher.model.multi_modal_projector.register_forward_hook(hook)


def test_skipped_nan_loss_is_logged_as_nan_and_a_window_averages_the_kept_steps(tmp_path):
    """A NaN loss is logged as NaN, not 0.0; a logging window holding a skipped step averages the others."""
    runs = {}
    for logging_steps in (1, 2):
        teacher = build_tiny_llava_next(seed=1)
        poison_teacher_loss(teacher[0], {2})
        trainer = make_trainer(
            tmp_path / str(logging_steps),
            teacher=teacher,
            nonfinite_kd_action="skip",
            max_steps=4,
            logging_steps=logging_steps,
        )
        runs[logging_steps] = (trainer, trainer.train())
    (each, each_result), (pairs, pairs_result) = runs[1], runs[2]
    losses = [e["loss"] for e in step_logs(each)]
    assert math.isnan(losses[1]) and all(math.isfinite(v) for i, v in enumerate(losses) if i != 1)
    windows = [e["loss"] for e in step_logs(pairs)]
    assert windows[0] == pytest.approx(losses[0], rel=1e-5)  # steps 1-2: step 2 was skipped
    assert windows[1] == pytest.approx((losses[2] + losses[3]) / 2, rel=1e-5)
    expected = (losses[0] + losses[2] + losses[3]) / 3
    assert each_result.training_loss == pytest.approx(expected, rel=1e-5)
    assert pairs_result.training_loss == pytest.approx(expected, rel=1e-5)


def test_too_many_consecutive_skips_stop_the_run(tmp_path):
    student = build_tiny_qwen3_vl(seed=0)
    initial = {k: v.detach().clone() for k, v in student[0].state_dict().items()}
    poison_gradient(student[0], None)
    trainer = make_trainer(
        tmp_path, student=student, nonfinite_kd_action="skip", max_steps=6, max_consecutive_skipped_steps=2
    )
    with pytest.raises(FloatingPointError, match=r"3 consecutive updates .*max_consecutive_skipped_steps=2"):
        trainer.train()
    assert trainer.skipped_nonfinite_steps == 3 and trainer.state.global_step == 2
    now = trainer.model.state_dict()
    assert all(torch.equal(now[k], v) for k, v in initial.items())  # nothing was ever applied


def test_max_consecutive_skipped_steps_is_checked(tmp_path):
    from tests.test_trainer import make_args

    with pytest.raises(ValueError, match="max_consecutive_skipped_steps"):
        make_args(tmp_path, max_consecutive_skipped_steps=0)


def test_saving_refuses_nonfinite_weights_and_names_them(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=1)
    trainer.train()
    with torch.no_grad():
        dict(trainer.model.named_parameters())[POISONED][0, 0] = float("nan")
        next(trainer.kd_method.parameters()).view(-1)[0] = float("inf")
    aligner_name = f"kd_method.{next(iter(dict(trainer.kd_method.named_parameters())))}"
    target = tmp_path / "saved"
    with pytest.raises(FloatingPointError, match="2 tensor") as error:
        trainer.save_model(str(target))
    assert POISONED in str(error.value) and aligner_name in str(error.value)
    assert not target.exists() or not os.listdir(target)  # nothing written
