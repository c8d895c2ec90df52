"""ULD baseline method (Boizard et al., TMLR 2025): ``CE + lambda * ULD`` on index-aligned answer positions."""

from evl_kd_trainer.methods.uld.config import ULDConfig
from evl_kd_trainer.methods.uld.method import ULDMethod

__all__ = ["ULDConfig", "ULDMethod"]
