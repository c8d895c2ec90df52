"""Assembling one batch's :class:`~evl_kd_trainer.methods.DistillFeatures` from what the request asks for.

The teacher's side comes as a :class:`TeacherSide`, from a live forward (:func:`live_teacher_side`) or from any
other source of the same tensors, so the method never knows where its teacher features came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from evl_kd_trainer.methods import DistillationMethod, DistillFeatures, FeatureRequest, logits_at
from evl_kd_trainer.models.base import ModelAdapter, unwrap_model


@dataclass
class TeacherSide:
    """The teacher's features of one batch.

    Attributes:
        hidden: ``(B, L, D)`` hidden states of the requested layer.
        adapter: the teacher's model adapter (image-token mask, widths).
        visual / visual_mask: padded LM-input visual tokens ``(B, V, Dv)`` and their mask, when requested.
        lm_head / embed_tokens: the teacher's LM head and input embeddings (frozen), when the request needs them
            (the LM head is also what teacher logits are computed with).
        logits: ``(logits (B, R, V), mask (B, R))`` at the positions predicting an answer token, when they come
            ready-made (a top-k teacher cache) rather than from ``lm_head``.
    """

    hidden: torch.Tensor
    adapter: ModelAdapter
    visual: torch.Tensor | None = None
    visual_mask: torch.Tensor | None = None
    lm_head: nn.Module | None = None
    embed_tokens: nn.Module | None = None
    logits: tuple[torch.Tensor, torch.Tensor] | None = None


def live_teacher_side(
    teacher: nn.Module, adapter: ModelAdapter, inputs: dict[str, Any], request: FeatureRequest
) -> TeacherSide:
    """Run the frozen teacher on its view of the batch under ``no_grad``, capturing only what ``request`` reads
    (its LM head never runs over the sequence)."""
    from evl_kd_trainer.models.capture import teacher_features

    with torch.no_grad():
        store = teacher_features(teacher, adapter, inputs, hidden_layer=request.teacher_layer, visual=request.visual)
    side = TeacherSide(hidden=store.hidden, adapter=adapter)
    if request.visual:
        side.visual, side.visual_mask = store.padded_visual()
    hf_teacher = unwrap_model(teacher)
    if request.lm_heads or request.teacher_logits:
        side.lm_head = adapter.get_lm_head(hf_teacher)
    if request.embeddings:
        side.embed_tokens = hf_teacher.get_input_embeddings()
    return side


def build_features(
    method: DistillationMethod,
    request: FeatureRequest,
    student_store: Any,
    student: nn.Module,
    student_adapter: ModelAdapter,
    teacher: TeacherSide,
    masks: dict[str, torch.Tensor],
) -> DistillFeatures:
    """The method's features: both hidden states, masks and ids always; visual tokens, LM heads, embeddings and
    logits only when requested. ``masks`` holds ``{student,teacher}_{attention_mask,response_mask,input_ids}``.
    Each LM head runs once, only where the method reads logits (the answer positions for the logit baselines)."""
    features = DistillFeatures(
        student_hidden=student_store.hidden,
        teacher_hidden=teacher.hidden,
        student_image_mask=student_adapter.image_token_mask(masks["student_input_ids"]),
        teacher_image_mask=teacher.adapter.image_token_mask(masks["teacher_input_ids"]),
        **masks,
    )
    if request.visual:
        features.student_visual, features.student_visual_mask = student_store.padded_visual()
        features.teacher_visual, features.teacher_visual_mask = teacher.visual, teacher.visual_mask
    student_lm_head = student_adapter.get_lm_head(student)
    if request.lm_heads:
        features.student_lm_head, features.teacher_lm_head = student_lm_head, teacher.lm_head
    if request.embeddings:
        features.student_embed_tokens = student.get_input_embeddings()
        features.teacher_embed_tokens = teacher.embed_tokens
    if request.student_logits:
        positions = method.logit_positions(features, "student")
        features.student_logits, features.student_logits_mask = logits_at(
            student_lm_head, student_store.hidden, positions
        )
    if request.teacher_logits and teacher.logits is not None:
        features.teacher_logits, features.teacher_logits_mask = teacher.logits
    elif request.teacher_logits:
        positions = method.logit_positions(features, "teacher")
        with torch.no_grad():
            features.teacher_logits, features.teacher_logits_mask = logits_at(
                teacher.lm_head, teacher.hidden, positions
            )
    return features
