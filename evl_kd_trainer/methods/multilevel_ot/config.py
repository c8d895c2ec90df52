"""MultiLevelOT's own fields of ``EVLDistillConfig`` (Cui et al., AAAI 2025)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class MultiLevelOTConfig:
    r"""
    > Parameters of MultiLevelOT (`kd_method="multilevel_ot"`): `L_CE + mlot_lambda * (token + mlot_seq_weight *
    sequence)`

    mlot_lambda (`float`, *optional*, defaults to `1.5`):
        MultiLevelOT: weight of `token + mlot_seq_weight * sequence` added to CE (the authors' `distil_factor`).
    mlot_log_weight (`float`, *optional*, defaults to `0.1`):
        MultiLevelOT: weight of the log (cross-entropy-like) part of the token-level term.
    mlot_seq_weight (`float`, *optional*, defaults to `0.1`):
        MultiLevelOT: weight of the sequence-level Sinkhorn term.
    mlot_topk (`int`, *optional*, defaults to `50`):
        MultiLevelOT: number of sorted top probabilities compared.
    mlot_sinkhorn_reg (`float`, *optional*, defaults to `0.1`):
        MultiLevelOT: Sinkhorn regularisation of the sequence-level term.
    mlot_sinkhorn_iters (`int`, *optional*, defaults to `20`):
        MultiLevelOT: Sinkhorn iterations of the sequence-level term.
    """

    mlot_lambda: float = field(default=1.5, metadata={"help": "MultiLevelOT: weight of token + seq_weight * sequence."})
    mlot_log_weight: float = field(default=0.1, metadata={"help": "MultiLevelOT: weight of the token-level log term."})
    mlot_seq_weight: float = field(default=0.1, metadata={"help": "MultiLevelOT: weight of the sequence-level term."})
    mlot_topk: int = field(default=50, metadata={"help": "MultiLevelOT: sorted top-k probabilities compared."})
    mlot_sinkhorn_reg: float = field(default=0.1, metadata={"help": "MultiLevelOT: Sinkhorn regularisation."})
    mlot_sinkhorn_iters: int = field(default=20, metadata={"help": "MultiLevelOT: Sinkhorn iterations."})

    def check(self) -> None:
        for name in ("mlot_lambda", "mlot_log_weight", "mlot_seq_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)}.")
        if not self.mlot_sinkhorn_reg > 0:
            raise ValueError(f"`mlot_sinkhorn_reg` must be > 0, got {self.mlot_sinkhorn_reg}.")
        for name in ("mlot_topk", "mlot_sinkhorn_iters"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}.")


CONFIG = MultiLevelOTConfig
