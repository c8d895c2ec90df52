"""EM-KD's own fields of ``EVLDistillConfig`` (Feng et al., AAAI 2026)."""

from __future__ import annotations

from dataclasses import dataclass, field

from evl_kd_trainer.losses.emkd import CROSS_VOCAB_MODES


@dataclass
class EMKDConfig:
    r"""
    > Parameters of EM-KD (`kd_method="emkd"`): `L_CE + emkd_vsd_weight * VSD + emkd_vlad_weight * VLAD`

    emkd_cross_vocab (`str`, *optional*, defaults to `"sorted_probs"`):
        EM-KD: how vision logits of different vocabularies are compared (`"sorted_probs"`, or `"same_vocab"`
        when teacher and student share a vocabulary).
    emkd_topk (`int`, *optional*, defaults to `64`):
        EM-KD: sorted probabilities kept per vision token for the cross-vocabulary comparison.
    emkd_temperature (`float`, *optional*, defaults to `1.0`):
        EM-KD: temperature of the vision logits.
    emkd_vsd_weight (`float`, *optional*, defaults to `1.0`):
        EM-KD: weight of the vision-semantic distillation (reverse KL) term.
    emkd_vlad_weight (`float`, *optional*, defaults to `1.0`):
        EM-KD: weight of the vision-language affinity distillation (SmoothL1) term.
    """

    emkd_cross_vocab: str = field(
        default="sorted_probs",
        metadata={"help": "EM-KD: cross-vocabulary comparison of vision logits: 'sorted_probs' or 'same_vocab'."},
    )
    emkd_topk: int = field(default=64, metadata={"help": "EM-KD: sorted probabilities kept per vision token."})
    emkd_temperature: float = field(default=1.0, metadata={"help": "EM-KD: temperature of the vision logits."})
    emkd_vsd_weight: float = field(default=1.0, metadata={"help": "EM-KD: weight of the VSD (reverse KL) term."})
    emkd_vlad_weight: float = field(default=1.0, metadata={"help": "EM-KD: weight of the VLAD (SmoothL1) term."})

    def check(self) -> None:
        for name in ("emkd_vsd_weight", "emkd_vlad_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)}.")
        if not self.emkd_temperature > 0:
            raise ValueError(f"`emkd_temperature` must be > 0, got {self.emkd_temperature}.")
        if self.emkd_topk < 1:
            raise ValueError(f"`emkd_topk` must be >= 1, got {self.emkd_topk}.")
        if self.emkd_cross_vocab not in CROSS_VOCAB_MODES:
            raise ValueError(f"`emkd_cross_vocab` must be one of {CROSS_VOCAB_MODES}, got {self.emkd_cross_vocab!r}.")


CONFIG = EMKDConfig
