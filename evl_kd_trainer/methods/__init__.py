"""Distillation methods, one folder per method (``methods/<name>/``), registered by name for ``kd_method``.

The built-in methods are found by scanning this package (:func:`builtin_method_names`); see ``docs/extending.md``.
"""

from __future__ import annotations

from evl_kd_trainer.methods.base import DistillationMethod, ModelDims
from evl_kd_trainer.methods.features import (
    DistillFeatures,
    logits_at,
    next_token_positions,
    next_token_response_mask,
    response_logits,
)
from evl_kd_trainer.methods.registry import (
    METHOD_REGISTRY,
    builtin_method_names,
    get_method,
    load_builtin_methods,
    method_config_classes,
    method_names,
    register_method,
)
from evl_kd_trainer.methods.request import FeatureRequest

__all__ = [
    "METHOD_REGISTRY",
    "DistillFeatures",
    "DistillationMethod",
    "FeatureRequest",
    "ModelDims",
    "builtin_method_names",
    "get_method",
    "load_builtin_methods",
    "logits_at",
    "method_config_classes",
    "method_names",
    "next_token_positions",
    "next_token_response_mask",
    "register_method",
    "response_logits",
]
