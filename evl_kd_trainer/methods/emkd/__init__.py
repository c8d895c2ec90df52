"""EM-KD baseline method (Feng et al., AAAI 2026): vision-token matching + VSD + VLAD."""

from evl_kd_trainer.methods.emkd.config import EMKDConfig
from evl_kd_trainer.methods.emkd.method import EMKDMethod

__all__ = ["EMKDConfig", "EMKDMethod"]
