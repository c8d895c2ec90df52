"""DSKD with cross-model attention (Zhang et al., EMNLP 2024), the baseline for different vocabularies."""

from evl_kd_trainer.methods.dskd.config import DSKDConfig
from evl_kd_trainer.methods.dskd.method import DSKDMethod

__all__ = ["DSKDConfig", "DSKDMethod"]
