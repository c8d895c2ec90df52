"""Distillation losses: pure functions on tensors, one module per loss family (the methods select them)."""

from evl_kd_trainer.losses.dskd import dskd_kl_loss
from evl_kd_trainer.losses.emkd import vlad_loss, vsd_loss
from evl_kd_trainer.losses.mhca import mhca_loss
from evl_kd_trainer.losses.multilevel_ot import mlot_sequence_loss, mlot_token_loss
from evl_kd_trainer.losses.ot import l2_normalize, sinkhorn_ot_loss, sinkhorn_plan
from evl_kd_trainer.losses.relational import relational_loss, relational_terms
from evl_kd_trainer.losses.uld import uld_loss

__all__ = [
    "dskd_kl_loss",
    "l2_normalize",
    "mhca_loss",
    "mlot_sequence_loss",
    "mlot_token_loss",
    "relational_loss",
    "relational_terms",
    "sinkhorn_ot_loss",
    "sinkhorn_plan",
    "uld_loss",
    "vlad_loss",
    "vsd_loss",
]
