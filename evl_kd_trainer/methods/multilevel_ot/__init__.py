"""MultiLevelOT baseline method (Cui et al., AAAI 2025): ``CE + lambda * (token + 0.1 * sequence)``."""

from evl_kd_trainer.methods.multilevel_ot.config import MultiLevelOTConfig
from evl_kd_trainer.methods.multilevel_ot.method import MultiLevelOTMethod

__all__ = ["MultiLevelOTConfig", "MultiLevelOTMethod"]
