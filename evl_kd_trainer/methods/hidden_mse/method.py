"""Hidden-state MSE (FitNets) between the student's states and projected teacher states at answer positions."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from evl_kd_trainer.losses.alignment import align_response_spans
from evl_kd_trainer.methods.base import DistillationMethod, DistillFeatures, FeatureRequest, ModelDims
from evl_kd_trainer.methods.hidden_mse.config import HiddenMSEConfig
from evl_kd_trainer.methods.hidden_mse.loss import hidden_mse_loss
from evl_kd_trainer.methods.registry import register_method
from evl_kd_trainer.methods.request import POSITIONS_RESPONSE


@register_method("hidden_mse")
class HiddenMSEMethod(DistillationMethod):
    """The first feature baseline users try: a linear map ``W`` (teacher width -> student width, trained at
    ``aligner_learning_rate``) and ``L_mse = mean ||H_s[i] - W H_t[i]||^2 / D`` over the answer positions, the
    ``i``-th answer token of the student paired with the ``i``-th of the teacher (ULD's index alignment: the two
    tokenizers cut the answer differently, the longer tail is dropped). Combined as ``(1 - alpha) * CE + alpha *
    hidden_mse_lambda * L_mse``. Reads the hidden states of ``student_hidden_layer`` / ``teacher_hidden_layer``
    only: no logits, no visual tokens.
    """

    config_class = HiddenMSEConfig
    label = "Hidden MSE (FitNets)"
    title = "hidden-state MSE to linearly projected teacher states (FitNets, Romero et al., 2015)"
    shared_fields = ("alpha", "student_hidden_layer", "teacher_hidden_layer")
    terms = ("hidden_mse_loss",)

    def __init__(self, args: Any, student_dims: ModelDims, teacher_dims: ModelDims) -> None:
        super().__init__(args, student_dims, teacher_dims)
        self.projector = nn.Linear(teacher_dims.hidden_size, student_dims.hidden_size)

    @classmethod
    def request(cls, args: Any) -> FeatureRequest:
        """Hidden states of the configured layers, read at the answer tokens only."""
        return FeatureRequest(
            student_layer=args.student_hidden_layer,
            teacher_layer=args.teacher_hidden_layer,
            teacher_positions=POSITIONS_RESPONSE,
        )

    @classmethod
    def active_for(cls, args: Any) -> bool:
        return args.alpha > 0.0 and args.hidden_mse_lambda > 0.0

    def forward(self, features: DistillFeatures) -> dict[str, torch.Tensor]:
        student, teacher, mask = align_response_spans(
            features.student_hidden,
            features.student_response_mask,
            features.teacher_hidden.detach(),
            features.teacher_response_mask,
        )
        projected = self.projector(teacher.to(self.projector.weight.dtype))
        loss = hidden_mse_loss(student, projected, mask)
        return {"hidden_mse_loss": loss, "kd_loss": self.args.hidden_mse_lambda * loss}
