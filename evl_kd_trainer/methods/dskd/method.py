"""DSKD with cross-model attention (Zhang et al., EMNLP 2024), the baseline for different vocabularies."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from evl_kd_trainer.losses.alignment import gather_response_positions
from evl_kd_trainer.losses.dskd import dskd_cma_terms
from evl_kd_trainer.methods.base import AnswerLogitMethod, DistillFeatures, FeatureRequest, ModelDims
from evl_kd_trainer.methods.dskd.config import DSKDConfig
from evl_kd_trainer.methods.features import next_token_response_mask, response_logits
from evl_kd_trainer.methods.registry import register_method
from evl_kd_trainer.methods.request import POSITIONS_NEXT_TOKEN


def _token_embeddings(features: DistillFeatures, side: str, ids: torch.Tensor) -> torch.Tensor:
    """Detached input embeddings of ``ids`` for ``side`` ("student"/"teacher"): DSKD's index embeddings read the
    models' input embedding tables (requested with ``embeddings=True``)."""
    embed = getattr(features, f"{side}_embed_tokens")
    if embed is None:
        raise ValueError(f"DSKD needs features.{side}_embed_tokens")
    return embed(ids).detach()


def _pack(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return gather_response_positions(x, mask)[0]


def _pack_ids(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return gather_response_positions(ids.unsqueeze(-1), mask)[0].squeeze(-1)


@register_method("dskd")
class DSKDMethod(AnswerLogitMethod):
    """Dual-Space KD with Cross-Model Attention; equations in :mod:`evl_kd_trainer.losses.dskd`.

    Owns the three projectors of the authors' ``projector_config.json`` (all ``nn.Linear``, no
    ``nn.MultiheadAttention``, which breaks under ZeRO-3): ``query_proj`` (2Ds -> 2Dt), ``t2s_proj``
    (Dt -> Ds), ``s2t_proj`` (Ds -> Dt). Reads the hidden states the trainer captured (DSKD uses the
    last layer), both logits (computed at the positions predicting an answer token only, see
    :meth:`logit_positions`), both LM heads and both input ids (targets and index embeddings).

    The student's head is applied with detached weights (as in the code, the projector CE must not
    train it); the teacher's is frozen anyway and is called as a module.

    Config fields: ``dskd_alpha`` (0.5, the code's ``kd_rate``: ``(1 - alpha) CE + alpha KD``),
    ``dskd_temperature`` (2.0), ``dskd_projector_lr`` (1e-3; this module's
    parameter group, not here).
    """

    config_class = DSKDConfig
    label = "DSKD"
    terms = ("dskd_t2s_ce_loss", "dskd_student_space_loss", "dskd_teacher_space_loss")
    title = "Dual-Space KD with cross-model attention (Zhang et al., 2024)"

    def __init__(self, args: Any, student_dims: ModelDims, teacher_dims: ModelDims) -> None:
        super().__init__(args, student_dims, teacher_dims)
        ds, dt = student_dims.hidden_size, teacher_dims.hidden_size
        self.query_proj = nn.Linear(2 * ds, 2 * dt)
        self.t2s_proj = nn.Linear(dt, ds)
        self.s2t_proj = nn.Linear(ds, dt)
        self.alpha = float(args.dskd_alpha)
        self.temperature = float(args.dskd_temperature)

    @classmethod
    def request(cls, args: Any) -> FeatureRequest:
        """Both logits at the answer-predicting positions, both LM heads (the projected states are decoded through
        them) and both input-embedding tables (index embeddings), all from the final layer."""
        return FeatureRequest(
            student_logits=True,
            teacher_logits=True,
            lm_heads=True,
            embeddings=True,
            teacher_positions=POSITIONS_NEXT_TOKEN,
        )

    def parameter_groups(self) -> list[tuple[list[nn.Parameter], float]]:
        """The projectors at ``dskd_projector_lr`` (the authors' 1e-3), not the shared aligner rate."""
        return [(list(self.parameters()), self.args.dskd_projector_lr)]

    @staticmethod
    def _run(module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        return module(x.to(module.weight.dtype)).float()

    def forward(self, features: DistillFeatures) -> dict[str, torch.Tensor]:
        f = features
        for field in ("student_logits", "teacher_logits", "student_input_ids", "teacher_input_ids"):
            if getattr(f, field) is None:
                raise ValueError(f"DSKD needs features.{field}")
        s_mask = next_token_response_mask(f.student_response_mask).bool()
        t_mask = next_token_response_mask(f.teacher_response_mask).bool()
        s_in, s_tgt = f.student_input_ids[:, :-1], f.student_input_ids[:, 1:]
        t_in, t_tgt = f.teacher_input_ids[:, :-1], f.teacher_input_ids[:, 1:]

        s_index = torch.cat([_token_embeddings(f, "student", s_in), _token_embeddings(f, "student", s_tgt)], -1)
        t_tgt_emb = _token_embeddings(f, "teacher", t_tgt)
        t_index = torch.cat([_token_embeddings(f, "teacher", t_in), t_tgt_emb], -1)

        student_head_w = f.student_lm_head.weight
        student_head_b = getattr(f.student_lm_head, "bias", None)
        teacher_head = f.teacher_lm_head

        def student_head(h: torch.Tensor) -> torch.Tensor:
            bias = None if student_head_b is None else student_head_b.detach().to(h.dtype)
            return F.linear(h, student_head_w.detach().to(h.dtype), bias)

        def teacher_head_fn(h: torch.Tensor) -> torch.Tensor:
            return teacher_head(h.to(teacher_head.weight.dtype))

        terms = dskd_cma_terms(
            student_hidden=_pack(f.student_hidden[:, :-1], s_mask),
            student_logits=_pack(*response_logits(f, "student")),
            student_index_embeds=_pack(s_index, s_mask),
            student_targets=_pack_ids(s_tgt, s_mask),
            student_mask=gather_response_positions(s_in.unsqueeze(-1), s_mask)[1],
            student_head=student_head,
            teacher_hidden=_pack(f.teacher_hidden[:, :-1].detach(), t_mask),
            teacher_logits=_pack(*response_logits(f, "teacher")).detach(),
            teacher_index_embeds=_pack(t_index, t_mask),
            teacher_target_embeds=_pack(t_tgt_emb, t_mask),
            teacher_mask=gather_response_positions(t_in.unsqueeze(-1), t_mask)[1],
            teacher_head=teacher_head_fn,
            query_proj=lambda x: self._run(self.query_proj, x),
            t2s_proj=lambda x: self._run(self.t2s_proj, x),
            s2t_proj=lambda x: self._run(self.s2t_proj, x),
            temperature=self.temperature,
        )
        kd = terms["t2s_ce"] + terms["student_space"] + terms["teacher_space"]
        return {
            "dskd_t2s_ce_loss": terms["t2s_ce"],
            "dskd_student_space_loss": terms["student_space"],
            "dskd_teacher_space_loss": terms["teacher_space"],
            "kd_loss": kd,
        }

    @classmethod
    def active_for(cls, args: Any) -> bool:
        return args.dskd_alpha > 0.0

    def total_loss(self, ce_loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """DSKD's objective: ``(1 - alpha) CE + alpha KD`` with its own ``dskd_alpha`` (0.5)."""
        return (1.0 - self.alpha) * ce_loss + self.alpha * terms["kd_loss"]
