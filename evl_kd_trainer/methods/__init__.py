"""Distillation methods, one module (or folder) per method, registered by name for ``kd_method``."""

from evl_kd_trainer.methods.base import (
    METHOD_REGISTRY,
    DistillationMethod,
    DistillFeatures,
    ModelDims,
    get_method,
    next_token_response_mask,
    register_method,
)

__all__ = [
    "METHOD_REGISTRY",
    "DistillFeatures",
    "DistillationMethod",
    "ModelDims",
    "get_method",
    "next_token_response_mask",
    "register_method",
]
