"""Plain supervised fine-tuning inside the distillation trainer (the SFT row of the paper's Table 1)."""

from __future__ import annotations

from typing import Any

from evl_kd_trainer.methods.base import DistillationMethod, FeatureRequest
from evl_kd_trainer.methods.registry import register_method
from evl_kd_trainer.methods.sft.config import SFTMethodConfig


@register_method("sft")
class SFTMethod(DistillationMethod):
    """No teacher, no distillation: never active, so the trainer runs ``SFTTrainer``'s own loss and builds no
    module of this class into the student (it is the fair control of a distillation run: same steps, CE only)."""

    config_class = SFTMethodConfig
    label = "SFT (kd_method=sft)"
    title = "supervised fine-tuning (no teacher)"

    @classmethod
    def request(cls, args: Any) -> FeatureRequest:
        return FeatureRequest(teacher=False)

    @classmethod
    def active_for(cls, args: Any) -> bool:
        return False
