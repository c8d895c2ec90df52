"""EM-KD baseline method (Feng et al., AAAI 2026): vision-token matching + VSD + VLAD."""

from __future__ import annotations

from typing import Any

import torch

from evl_kd_trainer.losses.alignment import align_response_spans
from evl_kd_trainer.losses.emkd import CROSS_VOCAB_MODES, match_vision_tokens, vlad_loss, vsd_loss
from evl_kd_trainer.methods.base import DistillationMethod, DistillFeatures, FeatureRequest, ModelDims
from evl_kd_trainer.methods.emkd.config import EMKDConfig
from evl_kd_trainer.methods.registry import register_method
from evl_kd_trainer.methods.request import POSITIONS_IMAGE_OR_RESPONSE


@register_method("emkd")
class EMKDMethod(DistillationMethod):
    """EM-KD; equations and the cross-vocabulary adaptation in :mod:`evl_kd_trainer.losses.emkd`.

    Per sample: the language model's last-layer hidden states at the image-token positions
    (``features.*_hidden[*_image_mask]``, the "vision tokens" EM-KD decodes) go through each model's LM head
    into vision logits, are matched by the Hungarian algorithm, then

    * ``vsd_loss``: reverse KL between matched vision logits (mean over pairs, then samples);
    * ``vlad_loss``: SmoothL1 between the cosine affinities of the answer hidden states with the
      matched vision tokens (both last-layer states); the two answers are aligned by index and truncated
      to the shorter (ULD's scheme), since their tokenisations differ.

    ``kd_loss = w_vsd * VSD + w_vlad * VLAD`` and the total is ``CE + kd_loss``: EM-KD adds weighted
    distillation terms to the supervised loss rather than mixing convexly.

    Config fields: ``emkd_cross_vocab`` ("sorted_probs" | "same_vocab"), ``emkd_topk`` (64),
    ``emkd_temperature`` (1.0), ``emkd_vsd_weight`` (1.0), ``emkd_vlad_weight`` (1.0).
    """

    config_class = EMKDConfig
    label = "EM-KD"
    terms = ("vsd_loss", "vlad_loss")
    title = "EM-KD (Feng et al., 2025)"

    def __init__(self, args: Any, student_dims: ModelDims, teacher_dims: ModelDims) -> None:
        super().__init__(args, student_dims, teacher_dims)
        self.cross_vocab = str(args.emkd_cross_vocab)
        if self.cross_vocab not in CROSS_VOCAB_MODES:
            raise ValueError(f"emkd_cross_vocab must be one of {CROSS_VOCAB_MODES}, got {self.cross_vocab!r}")
        if self.cross_vocab == "same_vocab" and student_dims.vocab_size != teacher_dims.vocab_size:
            raise ValueError("emkd_cross_vocab='same_vocab' needs equal vocabularies; use 'sorted_probs'")
        self.top_k = int(args.emkd_topk)
        self.temperature = float(args.emkd_temperature)
        self.vsd_weight = float(args.emkd_vsd_weight)
        self.vlad_weight = float(args.emkd_vlad_weight)

    @classmethod
    def request(cls, args: Any) -> FeatureRequest:
        """Last-layer hidden states (the vision tokens are decoded at the image positions) and both LM heads."""
        return FeatureRequest(lm_heads=True, teacher_positions=POSITIONS_IMAGE_OR_RESPONSE)

    def forward(self, features: DistillFeatures) -> dict[str, torch.Tensor]:
        f = features
        for field in ("student_image_mask", "teacher_image_mask"):
            if getattr(f, field) is None:
                raise ValueError(f"EM-KD needs features.{field} (the image-token positions of each view)")
        if f.student_lm_head is None or f.teacher_lm_head is None:
            raise ValueError("EM-KD needs both LM heads")
        s_text, t_text, text_mask = align_response_spans(
            f.student_hidden, f.student_response_mask, f.teacher_hidden.detach(), f.teacher_response_mask
        )
        vsd_terms, vlad_terms = [], []
        for b in range(f.student_hidden.shape[0]):
            s_vis = f.student_hidden[b][f.student_image_mask[b].bool()]
            t_vis = f.teacher_hidden[b][f.teacher_image_mask[b].bool()].detach()
            if s_vis.shape[0] == 0 or t_vis.shape[0] == 0:
                continue  # a sample without images has nothing to match
            s_logits = f.student_lm_head(s_vis.to(f.student_lm_head.weight.dtype))
            with torch.no_grad():
                t_logits = f.teacher_lm_head(t_vis.to(f.teacher_lm_head.weight.dtype))
            t_idx, s_idx = match_vision_tokens(s_logits.detach(), t_logits, self.cross_vocab, self.top_k)
            vsd_terms.append(vsd_loss(s_logits[s_idx], t_logits[t_idx], self.cross_vocab, self.top_k, self.temperature))
            rows = text_mask[b]
            if bool(rows.any()):
                vlad_terms.append(vlad_loss(s_text[b][rows], s_vis[s_idx], t_text[b][rows], t_vis[t_idx]))
        zero = f.student_hidden.float().sum() * 0.0
        vsd = torch.stack(vsd_terms).mean() if vsd_terms else zero
        vlad = torch.stack(vlad_terms).mean() if vlad_terms else zero
        return {"vsd_loss": vsd, "vlad_loss": vlad, "kd_loss": self.vsd_weight * vsd + self.vlad_weight * vlad}

    @classmethod
    def active_for(cls, args: Any) -> bool:
        return args.emkd_vsd_weight > 0.0 or args.emkd_vlad_weight > 0.0

    def total_loss(self, ce_loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """EM-KD's objective: ``CE + w_vsd * VSD + w_vlad * VLAD`` (weights already in ``kd_loss``)."""
        return ce_loss + terms["kd_loss"]
