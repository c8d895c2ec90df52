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

from evl_kd_trainer.registry import Registry, T

METHOD_REGISTRY = Registry("KD method")


def register_method(name: str) -> Callable[[T], T]:
    """Class decorator registering a :class:`DistillationMethod` subclass under ``name`` (the ``kd_method`` value)."""
    return METHOD_REGISTRY.register(name)


def get_method(name: str) -> type[DistillationMethod]:
    """The method class registered as ``name``; unknown names raise a ``ValueError`` listing the known ones."""
    return METHOD_REGISTRY.get(name)  # type: ignore[return-value]


@dataclass(frozen=True)
class ModelDims:
    """Widths a method needs to build its modules.

    Attributes:
        hidden_size: width of the language model's hidden states (the captured layer).
        visual_width: width of the visual tokens fed to the language model (usually ``hidden_size``).
        vocab_size: size of the LM head's output.
    """

    hidden_size: int
    visual_width: int
    vocab_size: int


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
    student_lm_head: nn.Module | None = None
    teacher_lm_head: nn.Module | None = None
    student_embed_tokens: nn.Module | None = None
    teacher_embed_tokens: nn.Module | None = None


def next_token_response_mask(response_mask: torch.Tensor) -> torch.Tensor:
    """Mask over ``logits[:, :-1]`` selecting the positions whose *next* token is a response token."""
    return response_mask[:, 1:]


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
