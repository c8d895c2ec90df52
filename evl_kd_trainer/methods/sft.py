"""Plain supervised fine-tuning inside the distillation trainer (the SFT row of the paper's Table 1)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from evl_kd_trainer.methods.base import DistillationMethod, DistillFeatures, register_method


@register_method("sft")
class SFTMethod(DistillationMethod):
    """No teacher, no distillation: ``kd_loss`` is 0 and the total is the student's cross-entropy."""

    name: ClassVar[str] = "sft"
    needs_teacher: ClassVar[bool] = False

    def forward(self, features: DistillFeatures | None = None) -> dict[str, torch.Tensor]:
        # Keep the zero on the student's device so the trainer can log/aggregate it like any term.
        hidden = getattr(features, "student_hidden", None)
        device = hidden.device if hidden is not None else None
        return {"kd_loss": torch.zeros((), device=device)}

    @classmethod
    def active_for(cls, args: Any) -> bool:
        return False

    def total_loss(self, ce_loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        return ce_loss
