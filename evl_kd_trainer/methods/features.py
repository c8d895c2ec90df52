"""What a method reads for one batch (:class:`DistillFeatures`) and the helpers that index it.

Logits at position ``i`` predict token ``i + 1``; the helpers here are the one place that rule is written.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class DistillFeatures:
    """Everything a method may read for one batch; optional fields are ``None`` when not requested.

    Token-level masks are boolean ``(B, L)`` over the model's own tokenisation:
    ``*_attention_mask`` marks real (non-padding) tokens and ``*_response_mask`` marks the assistant
    answer tokens (where the student's labels are not -100). Logits at position ``i`` predict token
    ``i + 1``: a method comparing next-token distributions over the response must use
    ``response_mask[:, 1:]`` against ``logits[:, :-1]`` (see :func:`next_token_response_mask`).

    Visual tokens are padded per sample: all images of a sample concatenated in order, ``(B, V, D)``
    with a ``(B, V)`` boolean mask; a sample without images has an all-False row. They are the tokens the
    language model *receives*; ``*_image_mask`` instead marks, in each model's own sequence ``(B, L)``, the
    positions that hold visual tokens, so ``*_hidden[*_image_mask]`` are the LM's own states there.

    Logits: the trainer applies each LM head only at the positions the method asks for
    (:meth:`DistillationMethod.logit_positions`). Then ``*_logits`` is left-packed ``(B, R, V)``, those positions of
    each sample in order, with ``*_logits_mask`` ``(B, R)`` True on the real rows (:func:`logits_at`); when
    ``*_logits_mask`` is ``None``, ``*_logits`` covers the whole sequence, ``(B, L, V)``.
    :func:`response_logits` reads the next-token response rows either way.
    """

    student_hidden: torch.Tensor
    student_attention_mask: torch.Tensor
    student_response_mask: torch.Tensor
    teacher_hidden: torch.Tensor
    teacher_attention_mask: torch.Tensor
    teacher_response_mask: torch.Tensor
    student_input_ids: torch.Tensor | None = None
    teacher_input_ids: torch.Tensor | None = None
    student_visual: torch.Tensor | None = None
    student_visual_mask: torch.Tensor | None = None
    teacher_visual: torch.Tensor | None = None
    teacher_visual_mask: torch.Tensor | None = None
    student_image_mask: torch.Tensor | None = None
    teacher_image_mask: torch.Tensor | None = None
    student_logits: torch.Tensor | None = None
    teacher_logits: torch.Tensor | None = None
    student_logits_mask: torch.Tensor | None = None
    teacher_logits_mask: torch.Tensor | None = None
    student_lm_head: nn.Module | None = None
    teacher_lm_head: nn.Module | None = None
    student_embed_tokens: nn.Module | None = None
    teacher_embed_tokens: nn.Module | None = None


def next_token_response_mask(response_mask: torch.Tensor) -> torch.Tensor:
    """Mask over ``logits[:, :-1]`` selecting the positions whose *next* token is a response token."""
    return response_mask[:, 1:]


def next_token_positions(response_mask: torch.Tensor) -> torch.Tensor:
    """``(B, L)`` mask of the positions whose *next* token is a response token (the last position predicts none)."""
    positions = torch.zeros_like(response_mask, dtype=torch.bool)
    positions[:, :-1] = response_mask[:, 1:].bool()
    return positions


def logits_at(
    lm_head: nn.Module, hidden: torch.Tensor, positions: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``lm_head`` applied only at ``positions`` of ``hidden`` ``(B, L, D)``: ``(logits (B, R, V), mask (B, R))``,
    each sample's positions left-packed in order (R: the largest count; zero states after them). ``positions=None``
    gives the whole sequence's logits and no mask.

    The response is a few hundred of the thousands of positions a VLM's sequence holds (PULSE: ~300 of 3252), so
    this is where a logit method's memory goes: the full teacher logits alone are 416 MB per sample in fp32.
    """
    if positions is None:
        return lm_head(hidden), None
    from evl_kd_trainer.losses.alignment import gather_response_positions  # keeps this module's import light

    packed, mask = gather_response_positions(hidden, positions)
    return lm_head(packed), mask


def response_logits(features: DistillFeatures, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``side``'s ("student" / "teacher") logits at the positions predicting a response token, with their mask.

    Packed logits (``*_logits_mask`` set, from :func:`logits_at` with :func:`next_token_positions`) come back as
    they are; whole-sequence logits as ``logits[:, :-1]`` under ``response_mask[:, 1:]``. Either way
    :func:`~evl_kd_trainer.losses.alignment.gather_response_positions` of the pair gives the same rows.
    """
    logits = getattr(features, f"{side}_logits")
    if logits is None:
        raise ValueError(f"the method needs features.{side}_logits")
    mask = getattr(features, f"{side}_logits_mask")
    if mask is not None:
        return logits, mask.bool()
    return logits[:, :-1], next_token_response_mask(getattr(features, f"{side}_response_mask")).bool()
