"""Distillation losses: pure functions on tensors, one module per loss family, registered by name."""

from evl_kd_trainer.losses.registry import LOSS_REGISTRY, get_loss, list_losses, register_loss

__all__ = ["LOSS_REGISTRY", "get_loss", "list_losses", "register_loss"]
