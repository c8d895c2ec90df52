"""The interface every distillation method implements (EVL-ECG and the baselines of the paper's Table 1).

A method is an ``nn.Module`` that owns its trainable helpers (aligners, projectors) and turns the
features the trainer captured for one batch into named loss terms. The trainer stays method-agnostic:
it captures what ``needs_*`` asks for, calls the method, logs every returned term and combines them
with the student's cross-entropy through :meth:`DistillationMethod.total_loss`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from evl_kd_trainer.dims import ModelDims  # re-exported: methods import it from here
from evl_kd_trainer.registry import Registry, T

METHOD_REGISTRY = Registry("KD method")


def register_method(name: str) -> Callable[[T], T]:
    """Class decorator registering a :class:`DistillationMethod` subclass under ``name`` (the ``kd_method`` value)."""
    return METHOD_REGISTRY.register(name)


def get_method(name: str) -> type[DistillationMethod]:
    """The method class registered as ``name``; unknown names raise a ``ValueError`` listing the known ones."""
    return METHOD_REGISTRY.get(name)  # type: ignore[return-value]


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


class DistillationMethod(nn.Module):
    """Base class of a KD method.

    Subclasses set the ``needs_*`` flags (so the trainer computes teacher logits, student logits or
    visual tokens only when the method reads them), build their trainable modules in ``__init__`` and
    implement :meth:`forward`.

    Args:
        args: the training config (an ``EVLDistillConfig``); methods read their own fields from it.
        student_dims: widths of the student.
        teacher_dims: widths of the teacher.
    """

    name: ClassVar[str] = "base"
    needs_student_logits: ClassVar[bool] = False
    needs_teacher_logits: ClassVar[bool] = False
    needs_visual: ClassVar[bool] = False
    needs_teacher: ClassVar[bool] = True

    def __init__(self, args: Any, student_dims: ModelDims, teacher_dims: ModelDims) -> None:
        super().__init__()
        self.args = args
        self.student_dims = student_dims
        self.teacher_dims = teacher_dims

    def forward(self, features: DistillFeatures) -> dict[str, torch.Tensor]:
        """Return the method's unweighted terms by log name (e.g. ``"ot_loss"``) and ``"kd_loss"``,
        the method's combined distillation term (its own weights applied)."""
        raise NotImplementedError

    def logit_positions(self, features: DistillFeatures, side: str) -> torch.Tensor | None:
        """The ``(B, L)`` positions of ``side`` ("student" / "teacher") whose logits this method reads, when a
        ``needs_*_logits`` flag is set; ``None`` (the default) asks for the whole sequence's logits. The trainer
        applies the LM head there only (:func:`logits_at`)."""
        return None

    @classmethod
    def active_for(cls, args: Any) -> bool:
        """Whether the distillation terms carry any weight under ``args``; when not, the trainer neither loads
        nor runs the teacher and skips the method, so the run is plain SFT (default: ``alpha > 0``). A class
        method, so the trainer can decide before it loads a teacher."""
        return float(getattr(args, "alpha", 0.0)) > 0.0

    def is_active(self) -> bool:
        """:meth:`active_for` of this method's own ``args``."""
        return self.active_for(self.args)

    def total_loss(self, ce_loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """Combine the student's CE with the method's terms; default ``(1 - alpha) * CE + alpha * kd_loss``
        (paper section 2.4). Methods whose paper mixes differently (ULD: ``CE + lambda * L``) override it."""
        alpha = float(getattr(self.args, "alpha", 0.0))
        if alpha == 0.0:
            return ce_loss
        return (1.0 - alpha) * ce_loss + alpha * terms["kd_loss"]
