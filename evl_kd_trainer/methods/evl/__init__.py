"""EVL-ECG distillation (paper section 2): cross-attention alignment, relational matching, Sinkhorn OT."""

from evl_kd_trainer.methods.evl.config import EVLConfig
from evl_kd_trainer.methods.evl.method import EVLMethod

__all__ = ["EVLConfig", "EVLMethod"]
