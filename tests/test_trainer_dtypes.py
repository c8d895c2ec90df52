"""Every method trains with the recipes' dtypes: a bf16 teacher (PULSE converted in bf16) beside an fp32 student."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import TrainerCallback

from evl_kd_trainer.methods import builtin_method_names, get_method
from evl_kd_trainer.testing import build_tiny_llava_next, build_tiny_qwen3_vl, make_tiny_vlm_dataset
from evl_kd_trainer.trainer import EVLDistillTrainer
from tests.test_trainer import make_args

METHOD_TERMS = {
    "sft": set(),
    "evl": {"mhca_loss", "rel_loss", "ot_loss"},
    "uld": {"uld_loss"},
    "multilevel_ot": {"mlot_token_loss", "mlot_seq_loss"},
    "dskd": {"dskd_t2s_ce_loss", "dskd_student_space_loss", "dskd_teacher_space_loss"},
    "emkd": {"vsd_loss", "vlad_loss"},
}
LOGIT_METHODS = ("uld", "multilevel_ot", "dskd")
# Built-in methods owning trainable modules (others: none); a method added later is checked by its own tests.
WITH_MODULES = {"evl": True, "dskd": True, "sft": False, "uld": False, "multilevel_ot": False, "emkd": False}


class GradientProbe(TrainerCallback):
    """Which parameters hold a gradient right before each optimizer step (the student's names include the method's
    modules, registered under it as ``kd_method``)."""

    def __init__(self, student: torch.nn.Module, teacher: torch.nn.Module) -> None:
        self.student, self.teacher = student, teacher
        self.steps: list[tuple[dict[str, torch.Tensor], int]] = []

    def on_pre_optimizer_step(self, args, state, control, **kwargs) -> None:
        student = {name: p.grad.clone() for name, p in self.student.named_parameters() if p.grad is not None}
        teacher = sum(p.grad is not None for p in self.teacher.parameters())
        self.steps.append((student, teacher))


@pytest.mark.parametrize("method", builtin_method_names())
def test_bf16_teacher_and_fp32_student_train_every_method(tmp_path, method):
    student, student_processor = build_tiny_qwen3_vl(seed=0)
    teacher, teacher_processor = build_tiny_llava_next(seed=1, dtype=torch.bfloat16, flat=True)
    teacher_before = {name: p.detach().clone() for name, p in teacher.named_parameters()}
    probe = GradientProbe(student, teacher)
    head_rows: dict[str, list[tuple[int, ...]]] = {"student": [], "teacher": []}
    for side, model in (("student", student), ("teacher", teacher)):
        model.lm_head.register_forward_hook(lambda m, i, o, side=side: head_rows[side].append(tuple(i[0].shape)))
    teacher_lengths: list[int] = []
    teacher.model.register_forward_pre_hook(  # the trainer runs the teacher's base model (no LM head)
        lambda m, a, kw: teacher_lengths.append(kw["input_ids"].shape[1]), with_kwargs=True
    )
    args = make_args(tmp_path, kd_method=method, max_steps=2)
    trainer = EVLDistillTrainer(
        student,
        teacher_model=teacher,
        args=args,
        train_dataset=make_tiny_vlm_dataset(n=4, seed=0),
        processing_class=student_processor,
        teacher_processing_class=teacher_processor,
        callbacks=[probe],
    )
    trainer.train()

    logs = [entry for entry in trainer.state.log_history if "loss" in entry and "ce_loss" in entry]
    assert len(logs) == 2
    for entry in logs:
        expected = METHOD_TERMS.get(method, set(get_method(method).terms)) | {"ce_loss", "loss"}
        assert expected <= set(entry)
        assert all(math.isfinite(entry[key]) for key in expected), entry

    assert len(probe.steps) == 2
    kd_names = {f"kd_method.{name}" for name, _ in trainer.kd_method.named_parameters()}
    if method in WITH_MODULES:
        assert (len(kd_names) > 0) == WITH_MODULES[method]
    for grads, teacher_grads in probe.steps:
        assert teacher_grads == 0  # the teacher never gets a gradient
        assert all(torch.isfinite(g).all() for g in grads.values())
        assert any("language_model" in name for name in grads) and any("visual" in name for name in grads)
        assert kd_names <= set(grads)  # every module of the method learns
        assert all(grads[name].dtype == torch.float32 for name in grads)
    for name, p in teacher.named_parameters():
        assert p.dtype == torch.bfloat16 and torch.equal(p, teacher_before[name]), name

    if method == "sft":  # plain SFT neither prepares nor runs the teacher
        assert trainer.teacher_model is None and teacher_lengths == [] and head_rows["teacher"] == []
        return
    assert not any(p.requires_grad for p in teacher.parameters()) and len(teacher_lengths) == 2
    if method in LOGIT_METHODS or get_method(method).request(trainer.args).teacher_logits:
        # the logits: the student's LM head ran once per step and every teacher LM head call (DSKD also decodes
        # its projected student states with it) saw the answer positions only, fewer rows than the sequence
        assert len(head_rows["student"]) == 2
        calls_per_step = 2 if method == "dskd" else 1
        assert len(head_rows["teacher"]) == 2 * calls_per_step
        for call, rows in enumerate(head_rows["teacher"]):
            assert rows[0] == 2 and 0 < rows[1] < teacher_lengths[call // calls_per_step]
    elif method == "evl":
        assert head_rows == {"student": [], "teacher": []}  # EVL reads no logits
