"""ULD's own fields of ``EVLDistillConfig`` (Boizard et al., TMLR 2025)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ULDConfig:
    r"""
    > Parameters of ULD (`kd_method="uld"`): `L_CE + uld_lambda * L_uld`

    uld_lambda (`float`, *optional*, defaults to `1.5`):
        ULD: weight of the universal logit distillation term, `CE + lambda * L_uld`.
    """

    uld_lambda: float = field(default=1.5, metadata={"help": "ULD: weight of L_uld in CE + lambda * L_uld."})

    def check(self) -> None:
        if self.uld_lambda < 0:
            raise ValueError(f"`uld_lambda` must be >= 0, got {self.uld_lambda}.")


CONFIG = ULDConfig
