"""Plain supervised fine-tuning inside the distillation trainer (the SFT row of the paper's Table 1)."""

from evl_kd_trainer.methods.sft.config import SFTMethodConfig
from evl_kd_trainer.methods.sft.method import SFTMethod

__all__ = ["SFTMethodConfig", "SFTMethod"]
