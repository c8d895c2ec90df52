"""Plain SFT (`kd_method="sft"`) has no fields of its own."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SFTMethodConfig:
    r"""
    > `kd_method="sft"`: plain supervised fine-tuning, no teacher (no fields of its own)
    """

    def check(self) -> None:
        pass


CONFIG = SFTMethodConfig
