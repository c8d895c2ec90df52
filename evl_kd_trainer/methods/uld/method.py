"""ULD baseline method (Boizard et al., TMLR 2025): ``CE + lambda * ULD`` on index-aligned answer positions."""

from __future__ import annotations

from typing import Any

import torch

from evl_kd_trainer.losses.alignment import align_response_spans
from evl_kd_trainer.losses.uld import uld_loss
from evl_kd_trainer.methods.base import AnswerLogitMethod, DistillFeatures
from evl_kd_trainer.methods.features import response_logits
from evl_kd_trainer.methods.registry import register_method
from evl_kd_trainer.methods.uld.config import ULDConfig


@register_method("uld")
class ULDMethod(AnswerLogitMethod):
    """Universal Logit Distillation.

    Positions: logits at ``i`` predict token ``i + 1``, so the answer's next-token distributions are
    ``logits[:, :-1]`` under ``response_mask[:, 1:]`` (ULD's reference code takes the logits *at* the
    answer tokens, one position late; we use the positions that predict them). The two spans are
    aligned by index and truncated to the shorter (see :mod:`evl_kd_trainer.losses.alignment`). The trainer
    applies the LM heads at those positions only (:meth:`logit_positions`), never over the whole sequence.

    Config fields: ``uld_lambda`` (1.5, the reference config's ``distil_factor``).
    """

    config_class = ULDConfig
    label = "ULD"
    terms = ("uld_loss",)
    title = "Universal Logit Distillation (Boizard et al., 2025)"

    def __init__(self, args: Any, student_dims, teacher_dims) -> None:
        super().__init__(args, student_dims, teacher_dims)
        self.uld_lambda = float(args.uld_lambda)

    def forward(self, features: DistillFeatures) -> dict[str, torch.Tensor]:
        if features.student_logits is None or features.teacher_logits is None:
            raise ValueError("ULD needs student and teacher logits")
        s_logits, s_mask = response_logits(features, "student")
        t_logits, t_mask = response_logits(features, "teacher")
        s, t, mask = align_response_spans(s_logits, s_mask, t_logits.detach(), t_mask)
        loss = uld_loss(s, t, mask)
        return {"uld_loss": loss, "kd_loss": loss}

    @classmethod
    def active_for(cls, args: Any) -> bool:
        return args.uld_lambda > 0.0

    def total_loss(self, ce_loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """ULD's objective: ``CE + lambda * ULD`` (not the convex mix of the base class)."""
        return ce_loss + self.uld_lambda * terms["kd_loss"]
