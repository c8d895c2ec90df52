"""The interface every distillation method implements (EVL-ECG and the baselines of the paper's Table 1).

A method is one folder, ``methods/<name>/``: ``config.py`` (a dataclass of its own fields, joined into
``EVLDistillConfig`` by the registry) and ``method.py`` (a :class:`DistillationMethod`). The class says what it
reads (:meth:`DistillationMethod.request`, a :class:`FeatureRequest`), owns its trainable helpers (aligners,
projectors) and their learning rates (:meth:`DistillationMethod.parameter_groups`), turns the features of one batch
into named terms (:meth:`DistillationMethod.forward`) and combines them with the student's cross-entropy
(:meth:`DistillationMethod.total_loss`). The trainer stays method-agnostic. ``docs/extending.md`` walks through
adding one.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn

from evl_kd_trainer.dims import ModelDims  # noqa: F401  (re-exported: methods import it from here)
from evl_kd_trainer.methods.features import (  # noqa: F401  (re-exported: the old import path)
    DistillFeatures,
    logits_at,
    next_token_positions,
    next_token_response_mask,
    response_logits,
)
from evl_kd_trainer.methods.registry import METHOD_REGISTRY, get_method, register_method  # noqa: F401
from evl_kd_trainer.methods.request import POSITIONS_NEXT_TOKEN, FeatureRequest


class DistillationMethod(nn.Module):
    """Base class of a KD method.

    Subclasses set :attr:`config_class` (their config dataclass) and :attr:`title`, override :meth:`request` when
    they read more than hidden states, build their trainable modules in ``__init__`` and implement
    :meth:`forward`.

    Args:
        args: the training config (an ``EVLDistillConfig``, which holds every method's fields).
        student_dims: widths of the student.
        teacher_dims: widths of the teacher.
    """

    #: The method's config dataclass (its fields are part of ``EVLDistillConfig``); ``None``: no fields of its own.
    config_class: ClassVar[type | None] = None
    #: One line for the model card: what the method is and where it comes from.
    title: ClassVar[str] = ""
    #: Its short name in tables (benchmarks, comparisons).
    label: ClassVar[str] = ""
    #: Shared config fields the method reads, recorded in the model card beside its own.
    shared_fields: ClassVar[tuple[str, ...]] = ()
    #: The log names of the terms :meth:`forward` returns besides ``kd_loss`` (a term whose weight is 0 may be left
    #: out); the trainer logs each one beside ``ce_loss``.
    terms: ClassVar[tuple[str, ...]] = ()

    def __init__(self, args: Any, student_dims: ModelDims, teacher_dims: ModelDims) -> None:
        super().__init__()
        self.check_args(args)
        self.args = args
        self.student_dims = student_dims
        self.teacher_dims = teacher_dims

    # --- decided from the config alone, before any model is loaded -------------------------------------------
    @classmethod
    def request(cls, args: Any) -> FeatureRequest:
        """What the method reads under ``args``: by default the hidden states of the configured layers."""
        return FeatureRequest(student_layer=args.student_hidden_layer, teacher_layer=args.teacher_hidden_layer)

    @classmethod
    def active_for(cls, args: Any) -> bool:
        """Whether the distillation terms carry any weight under ``args``; when not, the trainer neither loads
        nor runs the teacher and skips the method, so the run is plain SFT (default: ``alpha > 0``)."""
        return args.alpha > 0.0

    @classmethod
    def check_args(cls, args: Any) -> None:
        """Refuse settings the method cannot run with (``EVLDistillConfig`` calls this for the selected method)."""
        if cls.request(args).reads_final_layer and (args.student_hidden_layer != -1 or args.teacher_hidden_layer != -1):
            raise ValueError(
                f"{cls.__name__} reads logits or decodes states with the LM head, which come from the final layer: "
                "leave `student_hidden_layer` and `teacher_hidden_layer` at -1."
            )

    @classmethod
    def card_settings(cls, args: Any) -> dict[str, Any]:
        """The settings the model card records: the shared fields the method reads, then its own."""
        own = [f.name for f in dataclasses.fields(cls.config_class)] if cls.config_class is not None else []
        return {name: getattr(args, name) for name in (*cls.shared_fields, *own)}

    # --- per batch ---------------------------------------------------------------------------------------------
    def forward(self, features: DistillFeatures) -> dict[str, torch.Tensor]:
        """Return the method's unweighted terms by log name (e.g. ``"ot_loss"``) and ``"kd_loss"``,
        the method's combined distillation term (its own weights applied)."""
        raise NotImplementedError

    def logit_positions(self, features: DistillFeatures, side: str) -> torch.Tensor | None:
        """The ``(B, L)`` positions of ``side`` ("student" / "teacher") whose logits this method reads, when its
        request asks for logits; ``None`` (the default) asks for the whole sequence's logits. The trainer
        applies the LM head there only (:func:`logits_at`)."""
        return None

    def total_loss(self, ce_loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """Combine the student's CE with the method's terms; default ``(1 - alpha) * CE + alpha * kd_loss``
        (paper section 2.4). Methods whose paper mixes differently (ULD: ``CE + lambda * L``) override it.
        Only called for an active method (``alpha > 0`` here)."""
        alpha = self.args.alpha
        return (1.0 - alpha) * ce_loss + alpha * terms["kd_loss"]

    def parameter_groups(self) -> list[tuple[list[nn.Parameter], float]]:
        """The method's trainable parameters and their learning rates (the paper's "projector LR", Tables 2-3),
        each pair one optimizer group of its own; default: all of them at ``aligner_learning_rate``."""
        return [(list(self.parameters()), self.args.aligner_learning_rate)]

    def is_active(self) -> bool:
        """:meth:`active_for` of this method's own ``args``."""
        return self.active_for(self.args)


class AnswerLogitMethod(DistillationMethod):
    """A method comparing both models' next-token distributions over the answer (ULD, MultiLevelOT, DSKD): it reads
    the logits at the positions predicting an answer token only, from the final layer."""

    @classmethod
    def request(cls, args: Any) -> FeatureRequest:
        """Both models' logits at the positions predicting an answer token (final layer)."""
        return FeatureRequest(student_logits=True, teacher_logits=True, teacher_positions=POSITIONS_NEXT_TOKEN)

    def logit_positions(self, features: DistillFeatures, side: str) -> torch.Tensor:
        """The positions predicting an answer token: the only logits the method reads."""
        return next_token_positions(getattr(features, f"{side}_response_mask"))
