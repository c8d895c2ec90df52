"""MultiLevelOT baseline method (Cui et al., AAAI 2025): ``CE + lambda * (token + 0.1 * sequence)``."""

from __future__ import annotations

from typing import Any

import torch

from evl_kd_trainer.losses.alignment import align_response_spans
from evl_kd_trainer.losses.multilevel_ot import mlot_sequence_loss, mlot_token_loss
from evl_kd_trainer.methods.base import AnswerLogitMethod, DistillFeatures
from evl_kd_trainer.methods.features import response_logits
from evl_kd_trainer.methods.multilevel_ot.config import MultiLevelOTConfig
from evl_kd_trainer.methods.registry import register_method


@register_method("multilevel_ot")
class MultiLevelOTMethod(AnswerLogitMethod):
    """Multi-Level Optimal Transport (see :mod:`evl_kd_trainer.losses.multilevel_ot` for the equations).

    Token level on the index-aligned answer positions (ULD's alignment), sequence level between each
    model's whole answer span (OT needs no alignment). Next-token positions: ``logits[:, :-1]`` under
    ``response_mask[:, 1:]``; the trainer applies the LM heads there only (:meth:`logit_positions`).

    Config fields: ``mlot_lambda`` (1.5, the ``distil_factor`` of the authors' config inherited from
    ULD), ``mlot_topk`` (50), ``mlot_log_weight`` (0.1), ``mlot_seq_weight`` (0.1),
    ``mlot_sinkhorn_reg`` (0.1), ``mlot_sinkhorn_iters`` (20).
    """

    config_class = MultiLevelOTConfig
    label = "MultiLevelOT"
    terms = ("mlot_token_loss", "mlot_seq_loss")
    title = "Multi-Level Optimal Transport (Cui et al., 2024)"

    def __init__(self, args: Any, student_dims, teacher_dims) -> None:
        super().__init__(args, student_dims, teacher_dims)
        self.mlot_lambda = float(args.mlot_lambda)
        self.top_k = int(args.mlot_topk)
        self.log_weight = float(args.mlot_log_weight)
        self.seq_weight = float(args.mlot_seq_weight)
        self.reg = float(args.mlot_sinkhorn_reg)
        self.n_iters = int(args.mlot_sinkhorn_iters)

    def forward(self, features: DistillFeatures) -> dict[str, torch.Tensor]:
        if features.student_logits is None or features.teacher_logits is None:
            raise ValueError("MultiLevelOT needs student and teacher logits")
        s_logits, s_mask = response_logits(features, "student")
        t_logits, t_mask = response_logits(features, "teacher")
        t_logits = t_logits.detach()
        s, t, mask = align_response_spans(s_logits, s_mask, t_logits, t_mask)
        token = mlot_token_loss(s, t, mask, top_k=self.top_k, log_weight=self.log_weight)
        seq = mlot_sequence_loss(
            s_logits, s_mask, t_logits, t_mask, top_k=self.top_k, reg=self.reg, n_iters=self.n_iters
        )
        kd = token + self.seq_weight * seq
        return {"mlot_token_loss": token, "mlot_seq_loss": seq, "kd_loss": kd}

    @classmethod
    def active_for(cls, args: Any) -> bool:
        return args.mlot_lambda > 0.0

    def total_loss(self, ce_loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """MultiLevelOT's objective: ``CE + lambda * (token + 0.1 * sequence)``."""
        return ce_loss + self.mlot_lambda * terms["kd_loss"]
