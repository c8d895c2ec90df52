"""DSKD's own fields of ``EVLDistillConfig`` (Zhang et al., EMNLP 2024)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DSKDConfig:
    r"""
    > Parameters of DSKD (`kd_method="dskd"`): `(1 - dskd_alpha) * L_CE + dskd_alpha * KD`

    dskd_alpha (`float`, *optional*, defaults to `0.5`):
        DSKD: its own mix `(1 - dskd_alpha) * CE + dskd_alpha * KD` (the method's `kd_rate`).
    dskd_temperature (`float`, *optional*, defaults to `2.0`):
        DSKD: distillation temperature.
    dskd_projector_lr (`float`, *optional*, defaults to `1e-3`):
        DSKD: learning rate of its projectors (used instead of `aligner_learning_rate` for that method).
    """

    dskd_alpha: float = field(default=0.5, metadata={"help": "DSKD: (1 - dskd_alpha) * CE + dskd_alpha * KD."})
    dskd_temperature: float = field(default=2.0, metadata={"help": "DSKD: distillation temperature."})
    dskd_projector_lr: float = field(default=1e-3, metadata={"help": "DSKD: learning rate of its projectors."})

    def check(self) -> None:
        if not 0.0 <= self.dskd_alpha <= 1.0:
            raise ValueError(f"`dskd_alpha` must be in [0, 1], got {self.dskd_alpha}.")
        for name in ("dskd_temperature", "dskd_projector_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"`{name}` must be > 0, got {getattr(self, name)}.")


CONFIG = DSKDConfig
