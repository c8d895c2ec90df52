"""The distillation trainer and its config."""

from evl_kd_trainer.trainer.config import EVLDistillConfig
from evl_kd_trainer.trainer.method_weights import ALIGNER_WEIGHTS_NAME
from evl_kd_trainer.trainer.trainer import EVLDistillTrainer

__all__ = ["ALIGNER_WEIGHTS_NAME", "EVLDistillConfig", "EVLDistillTrainer"]
