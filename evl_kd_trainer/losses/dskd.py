"""Dual-Space Knowledge Distillation with Cross-Model Attention (DSKD-CMA; Zhang et al., "Dual-Space
Knowledge Distillation for Large Language Models", EMNLP 2024), the variant for different vocabularies.

Notation per sample: student answer positions i (predicting token y_{i+1} of the student's tokens),
teacher answer positions j. Following the paper's CMA and the authors' criterion
``dual_space_kd_with_cross_model_attention``:

* index embeddings ``e^s_i = [emb_s(x_i); emb_s(y_i)]`` (input token and target token, detached),
  likewise ``e^t_j`` for the teacher; keys are ``e^t / std(e^t)``, queries ``W_q e^s`` (2Ds -> 2Dt);
* attention ``a_ij = softmax_j(<W_q e^s_i, e^t_j> / sqrt(2 Dt))`` over the teacher's answer positions;
* teacher -> student space: ``h~^t_i = sum_j a_ij W_t2s(h^t_j / std + emb_t(y_j) / std)``, decoded with
  the student's (detached) LM head into ``z^{t->s}_i``. It is trained by a cross-entropy on the student's
  targets (``L_t2s_ce``) and distils into the student: ``L_student = KL(softmax(z^{t->s}/T) ||
  softmax(z^s/T))``, counted only where ``z^{t->s}`` predicts the target correctly (the code's
  ``t2s_acc_mask``) and with ``z^{t->s}`` detached;
* student -> teacher space: ``h~^s_j = sum_i a^T_ji W_s2t h^s_i`` (softmax over the student positions of
  the transposed scores), decoded with the teacher's (detached) LM head; ``L_teacher =
  KL(softmax(z^t/T) || softmax(z^{s->t}/T))``;
* ``KD = L_t2s_ce + L_student + L_teacher``; the method mixes ``(1 - alpha) CE + alpha KD``.

Reductions: every term is summed over its positions and divided by the number of *student* answer tokens,
as the authors' training loop divides the whole loss by the student's label count (``loss_denom``); the
teacher-space term therefore sums over the teacher's answer tokens but is normalised by the student's.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

_NEG = -1e5  # the authors' additive mask value; finite so fully-masked rows stay NaN-free


def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Per-position ``KL(softmax(teacher/T) || softmax(student/T))`` in float32, summed over the vocabulary.

    No ``T^2`` factor, as in the DSKD code.
    """
    s_log = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    t_log = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return (t_log.exp() * (t_log - s_log)).sum(dim=-1)


def masked_mean(
    values: torch.Tensor,
    mask: torch.Tensor,
    weights: torch.Tensor | None = None,
    denominator: torch.Tensor | None = None,
) -> torch.Tensor:
    """``sum(values * weights) / count(mask)`` over masked entries (0, attached to the graph, when empty);
    ``denominator`` (a mask) counts the divisor instead of ``mask``."""
    mask = mask.bool()
    kept = mask if weights is None else mask & weights.bool()
    total = torch.where(kept, values, torch.zeros((), dtype=values.dtype, device=values.device)).sum()
    count = mask.sum() if denominator is None else denominator.bool().sum()
    return total / count.clamp(min=1).to(values.dtype)


def dskd_kl_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor,
    temperature: float = 2.0,
) -> torch.Tensor:
    """Token-mean forward KL at ``temperature`` (DSKD's ``forward_kl`` objective) over ``mask``."""
    return masked_mean(forward_kl(student_logits, teacher_logits, temperature), mask)


def cross_model_attention_scores(
    query: torch.Tensor, key: torch.Tensor, query_mask: torch.Tensor, key_mask: torch.Tensor
) -> torch.Tensor:
    """Scaled dot-product scores ``(B, Rq, Rk)``, invalid pairs set to a large negative value.

    Scaling is ``sqrt(key width)`` (= ``sqrt(2 Dt)`` for DSKD's concatenated index embeddings).
    """
    scores = query.float() @ key.float().transpose(-1, -2) / math.sqrt(key.shape[-1])
    valid = query_mask.bool().unsqueeze(-1) & key_mask.bool().unsqueeze(1)
    return scores.masked_fill(~valid, _NEG)


def dskd_cma_terms(
    *,
    student_hidden: torch.Tensor,
    student_logits: torch.Tensor,
    student_index_embeds: torch.Tensor,
    student_targets: torch.Tensor,
    student_mask: torch.Tensor,
    student_head: Callable[[torch.Tensor], torch.Tensor],
    teacher_hidden: torch.Tensor,
    teacher_logits: torch.Tensor,
    teacher_index_embeds: torch.Tensor,
    teacher_target_embeds: torch.Tensor,
    teacher_mask: torch.Tensor,
    teacher_head: Callable[[torch.Tensor], torch.Tensor],
    query_proj: Callable[[torch.Tensor], torch.Tensor],
    t2s_proj: Callable[[torch.Tensor], torch.Tensor],
    s2t_proj: Callable[[torch.Tensor], torch.Tensor],
    temperature: float = 2.0,
) -> dict[str, torch.Tensor]:
    """DSKD-CMA terms on left-packed answer positions (see the module docstring for the equations).

    Args:
        student_hidden ``(B, Rs, Ds)``, student_logits ``(B, Rs, Vs)``, student_index_embeds ``(B, Rs, 2Ds)``,
        student_targets ``(B, Rs)`` token ids each position predicts, student_mask ``(B, Rs)``.
        teacher_hidden ``(B, Rt, Dt)``, teacher_logits ``(B, Rt, Vt)``, teacher_index_embeds ``(B, Rt, 2Dt)``,
        teacher_target_embeds ``(B, Rt, Dt)``, teacher_mask ``(B, Rt)``.
        student_head / teacher_head: map hidden states to logits with frozen (detached) weights.
        query_proj (2Ds -> 2Dt), t2s_proj (Dt -> Ds), s2t_proj (Ds -> Dt): the trainable projectors.
        temperature: KD temperature (2.0 in the DSKD scripts).

    Returns:
        ``{"t2s_ce", "student_space", "teacher_space"}`` scalars.
    """
    # A sample whose other side has no answer tokens cannot be attended: drop it on both sides.
    s_mask = student_mask.bool() & teacher_mask.bool().any(dim=1, keepdim=True)
    t_mask = teacher_mask.bool() & student_mask.bool().any(dim=1, keepdim=True)

    def _std(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        # Global std as in the code, but over real positions only so padding does not shrink it.
        vals = x[m]
        return vals.std() if vals.numel() > 1 else torch.ones((), dtype=x.dtype, device=x.device)

    keys = teacher_index_embeds / _std(teacher_index_embeds, t_mask)
    t_values_in = teacher_hidden / _std(teacher_hidden, t_mask) + teacher_target_embeds / _std(
        teacher_target_embeds, t_mask
    )
    scores = cross_model_attention_scores(query_proj(student_index_embeds), keys, s_mask, t_mask)

    # Teacher -> student space.
    t2s_hidden = torch.softmax(scores, dim=-1) @ t2s_proj(t_values_in).float()
    t2s_logits = student_head(t2s_hidden).float()
    t2s_ce_all = F.cross_entropy(t2s_logits.transpose(1, 2), student_targets.clamp(min=0), reduction="none")
    t2s_ce = masked_mean(t2s_ce_all, s_mask)
    t2s_correct = t2s_logits.argmax(dim=-1).eq(student_targets)
    student_space = masked_mean(
        forward_kl(student_logits, t2s_logits.detach(), temperature), s_mask, weights=t2s_correct
    )

    # Student -> teacher space: the same scores, normalised over the student positions.
    s2t_hidden = torch.softmax(scores.transpose(1, 2), dim=-1) @ s2t_proj(student_hidden).float()
    s2t_logits = teacher_head(s2t_hidden).float()
    teacher_space = masked_mean(forward_kl(s2t_logits, teacher_logits, temperature), t_mask, denominator=s_mask)
    return {"t2s_ce": t2s_ce, "student_space": student_space, "teacher_space": teacher_space}
