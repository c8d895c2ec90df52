"""EVL-ECG distillation (paper section 2): cross-attention alignment, relational matching, Sinkhorn OT."""

from __future__ import annotations

from typing import Any

import torch

from evl_kd_trainer.aligners import CrossAttentionAligner, VisualProjector
from evl_kd_trainer.losses import mhca_loss, relational_loss, sinkhorn_ot_loss
from evl_kd_trainer.methods.base import DistillationMethod, DistillFeatures, FeatureRequest, ModelDims
from evl_kd_trainer.methods.evl.config import EVLConfig
from evl_kd_trainer.methods.registry import register_method
from evl_kd_trainer.methods.request import POSITIONS_ATTENTION, POSITIONS_NONE, POSITIONS_RESPONSE


@register_method("evl")
class EVLMethod(DistillationMethod):
    """The three EVL-ECG terms, combined as ``lambda_mhca * L_mhca + lambda_rel * L_rel + lambda_ot * L_ot``.

    - ``L_mhca`` (section 2.2): the student's hidden states ``H_s`` query the teacher's ``H_t`` through
      :class:`CrossAttentionAligner`; the aligned teacher ``H_t_hat`` is regressed onto ``H_s``.
    - ``L_rel`` (section 2.3, equation 1): distance- and angle-wise potentials of ``H_t_hat`` vs ``H_s``, so
      both sides have the student's length and the relation matrices are comparable position by position.
    - ``L_ot`` (section 2.1): teacher visual tokens, linearly projected to the student's width by
      :class:`VisualProjector`, transported onto the student's visual tokens by an entropic Sinkhorn plan.

    A term whose weight is 0 is neither built nor computed (the ablations of the paper's Table 6), so its
    modules do not exist and DDP sees no unused parameters.
    """

    config_class = EVLConfig
    label = "EVL-ECG (ours)"
    terms = ("mhca_loss", "rel_loss", "ot_loss")
    title = "EVL-ECG (multi-head cross-attention alignment, relational matching, Sinkhorn OT on visual tokens)"
    shared_fields = ("alpha", "kd_token_scope", "student_hidden_layer", "teacher_hidden_layer")

    def __init__(self, args: Any, student_dims: ModelDims, teacher_dims: ModelDims) -> None:
        super().__init__(args, student_dims, teacher_dims)
        self.lambda_mhca = float(args.lambda_mhca)
        self.lambda_rel = float(args.lambda_rel)
        self.lambda_ot = float(args.lambda_ot)
        self.aligner: CrossAttentionAligner | None = None
        self.visual_projector: VisualProjector | None = None
        if self.lambda_mhca > 0 or self.lambda_rel > 0:
            self.aligner = CrossAttentionAligner(
                student_dims.hidden_size, teacher_dims.hidden_size, num_heads=int(args.mhca_num_heads)
            )
        if self.lambda_ot > 0:
            self.visual_projector = VisualProjector(teacher_dims.visual_width, student_dims.visual_width)

    @classmethod
    def active_for(cls, args: Any) -> bool:
        """``alpha > 0`` and at least one term weighted: with every lambda at 0 the run is plain SFT."""
        weights = (args.lambda_mhca, args.lambda_rel, args.lambda_ot)
        return args.alpha > 0.0 and any(w > 0.0 for w in weights)

    @classmethod
    def request(cls, args: Any) -> FeatureRequest:
        """Hidden states of the configured layers under ``kd_token_scope`` (when MHCA or the relational term is
        weighted), and the visual tokens when the OT term is."""
        hidden_terms = args.lambda_mhca > 0 or args.lambda_rel > 0
        scope = POSITIONS_RESPONSE if args.kd_token_scope == "response" else POSITIONS_ATTENTION
        return FeatureRequest(
            student_layer=args.student_hidden_layer,
            teacher_layer=args.teacher_hidden_layer,
            visual=args.lambda_ot > 0,
            teacher_positions=scope if hidden_terms else POSITIONS_NONE,
        )

    def _token_masks(self, features: DistillFeatures) -> tuple[torch.Tensor, torch.Tensor]:
        if self.args.kd_token_scope == "response":
            return features.student_response_mask, features.teacher_response_mask
        return features.student_attention_mask, features.teacher_attention_mask

    def forward(self, features: DistillFeatures) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        kd = features.student_hidden.new_zeros((), dtype=torch.float32)
        if self.aligner is not None:
            student_mask, teacher_mask = self._token_masks(features)
            weight_dtype = self.aligner.q_proj.weight.dtype
            student_hidden = features.student_hidden.to(weight_dtype)
            aligned = self.aligner(student_hidden, features.teacher_hidden.to(weight_dtype), teacher_mask=teacher_mask)
            if self.lambda_mhca > 0:
                terms["mhca_loss"] = mhca_loss(
                    student_hidden, aligned, mask=student_mask, reduction=self.args.mhca_reduction
                ).float()
                kd = kd + self.lambda_mhca * terms["mhca_loss"]
            if self.lambda_rel > 0:
                terms["rel_loss"] = relational_loss(aligned, student_hidden, mask=student_mask).float()
                kd = kd + self.lambda_rel * terms["rel_loss"]
        if self.visual_projector is not None:
            if features.teacher_visual is None or features.student_visual is None:
                raise ValueError("EVL's OT term needs visual tokens of both models; none were captured.")
            projected = self.visual_projector(features.teacher_visual.to(self.visual_projector.proj.weight.dtype))
            terms["ot_loss"] = sinkhorn_ot_loss(
                projected,
                features.student_visual,
                teacher_mask=features.teacher_visual_mask,
                student_mask=features.student_visual_mask,
                epsilon=float(self.args.sinkhorn_epsilon),
                max_iter=int(self.args.sinkhorn_max_iter),
            ).float()
            kd = kd + self.lambda_ot * terms["ot_loss"]
        terms["kd_loss"] = kd
        return terms
