"""EVL-ECG's own fields of ``EVLDistillConfig`` (paper sections 2.1-2.4, Table 4, Appendix C.1)."""

from __future__ import annotations

from dataclasses import dataclass, field

MHCA_REDUCTIONS = ("mean", "sum")


@dataclass
class EVLConfig:
    r"""
    > Parameters of EVL-ECG (`kd_method="evl"`): `(1 - alpha) * L_CE + alpha * (lambda_mhca * L_mhca + lambda_rel *
    L_rel + lambda_ot * L_ot)`

    lambda_mhca (`float`, *optional*, defaults to `1.0`):
        Weight of the multi-head cross-attention alignment loss (paper 2.2). `0` skips the term.
    lambda_rel (`float`, *optional*, defaults to `0.03`):
        Weight of the relational distance/angle loss (paper 2.3, equation 1). `0` skips the term.
    lambda_ot (`float`, *optional*, defaults to `0.1`):
        Weight of the Sinkhorn optimal-transport loss on visual tokens (paper 2.1). `0` skips the term.
    mhca_num_heads (`int`, *optional*, defaults to `8`):
        Number of heads `h` of the cross-attention aligner; must divide the student's hidden size.
    sinkhorn_epsilon (`float`, *optional*, defaults to `0.1`):
        Entropic regularisation `eps` of the Sinkhorn plan (paper 2.1; fixed to 0.1 in Appendix C.1).
    sinkhorn_max_iter (`int`, *optional*, defaults to `1000`):
        Cap on the log-domain Sinkhorn iterations that polish GeomLoss's annealed plan to marginal error 1e-4
        (a warning names this field when the cap is hit; the plan is used as it is).
    mhca_reduction (`str`, *optional*, defaults to `"mean"`):
        `"mean"`: MSE over positions and features; `"sum"`: squared norm summed over features, averaged over
        positions (section 2.2 as printed). `"mean"` is the scale at which the paper's lambda ranges make sense.
    """

    lambda_mhca: float = field(default=1.0, metadata={"help": "Weight of L_mhca (paper 2.2); 0 skips it."})
    lambda_rel: float = field(default=0.03, metadata={"help": "Weight of L_rel (paper 2.3, eq. 1); 0 skips it."})
    lambda_ot: float = field(default=0.1, metadata={"help": "Weight of L_ot (paper 2.1); 0 skips it."})
    mhca_num_heads: int = field(default=8, metadata={"help": "Heads h of the cross-attention aligner."})
    sinkhorn_epsilon: float = field(
        default=0.1, metadata={"help": "Entropic regularisation eps of the Sinkhorn plan (paper 2.1)."}
    )
    sinkhorn_max_iter: int = field(
        default=1000, metadata={"help": "Cap on the Sinkhorn polishing iterations (warned about when hit)."}
    )
    mhca_reduction: str = field(
        default="mean",
        metadata={"help": "L_mhca reduction: 'mean' (MSE) or 'sum' (sum over features, section 2.2 as printed)."},
    )

    def check(self) -> None:
        for name in ("lambda_mhca", "lambda_rel", "lambda_ot"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)}.")
        if not self.sinkhorn_epsilon > 0:
            raise ValueError(f"`sinkhorn_epsilon` must be > 0, got {self.sinkhorn_epsilon}.")
        for name in ("mhca_num_heads", "sinkhorn_max_iter"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {getattr(self, name)}.")
        if self.mhca_reduction not in MHCA_REDUCTIONS:
            raise ValueError(f"`mhca_reduction` must be one of {MHCA_REDUCTIONS}, got {self.mhca_reduction!r}.")


CONFIG = EVLConfig
