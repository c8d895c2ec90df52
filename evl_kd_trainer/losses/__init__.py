"""Distillation losses: pure functions on tensors, one module per loss family, registered by name."""

from evl_kd_trainer.losses.dskd import dskd_kl_loss
from evl_kd_trainer.losses.emkd import vlad_loss, vsd_loss
from evl_kd_trainer.losses.mhca import mhca_loss
from evl_kd_trainer.losses.multilevel_ot import mlot_sequence_loss, mlot_token_loss
from evl_kd_trainer.losses.ot import l2_normalize, sinkhorn_ot_loss, sinkhorn_plan
from evl_kd_trainer.losses.registry import LOSS_REGISTRY, get_loss, list_losses, register_loss
from evl_kd_trainer.losses.relational import relational_loss, relational_terms
from evl_kd_trainer.losses.uld import uld_loss

# Importing a loss module registers its losses by name; the baselines' modules (``uld``, ``multilevel_ot``,
# ``dskd``, ``emkd``) are imported here so that ``get_loss`` knows every name after ``import evl_kd_trainer.losses``.
__all__ = [
    "LOSS_REGISTRY",
    "dskd_kl_loss",
    "get_loss",
    "l2_normalize",
    "list_losses",
    "mhca_loss",
    "mlot_sequence_loss",
    "mlot_token_loss",
    "register_loss",
    "relational_loss",
    "relational_terms",
    "sinkhorn_ot_loss",
    "sinkhorn_plan",
    "uld_loss",
    "vlad_loss",
    "vsd_loss",
]
