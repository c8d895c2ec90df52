"""Distillation losses: pure functions on tensors, one module per loss family, registered by name."""

from evl_kd_trainer.losses.mhca import mhca_loss
from evl_kd_trainer.losses.ot import l2_normalize, sinkhorn_ot_loss, sinkhorn_plan
from evl_kd_trainer.losses.registry import LOSS_REGISTRY, get_loss, list_losses, register_loss
from evl_kd_trainer.losses.relational import relational_loss, relational_terms

__all__ = [
    "LOSS_REGISTRY",
    "get_loss",
    "l2_normalize",
    "list_losses",
    "mhca_loss",
    "register_loss",
    "relational_loss",
    "relational_terms",
    "sinkhorn_ot_loss",
    "sinkhorn_plan",
]
