"""Distillation methods, one module per method, registered by name for ``kd_method``."""

from __future__ import annotations

import importlib

from evl_kd_trainer.methods.base import (
    METHOD_REGISTRY,
    DistillationMethod,
    DistillFeatures,
    ModelDims,
    get_method,
    logits_at,
    next_token_positions,
    next_token_response_mask,
    register_method,
    response_logits,
)

# Built-in methods, imported on demand so that `import evl_kd_trainer.methods` stays light.
BUILTIN_METHOD_MODULES = ("evl", "sft", "uld", "multilevel_ot", "dskd", "emkd")


def load_builtin_methods() -> None:
    """Import every built-in method module so that each registers itself."""
    for name in BUILTIN_METHOD_MODULES:
        module = f"evl_kd_trainer.methods.{name}"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:  # a method whose module is absent is simply not offered
            if err.name != module:
                raise


__all__ = [
    "BUILTIN_METHOD_MODULES",
    "METHOD_REGISTRY",
    "DistillFeatures",
    "DistillationMethod",
    "ModelDims",
    "get_method",
    "load_builtin_methods",
    "logits_at",
    "next_token_positions",
    "next_token_response_mask",
    "register_method",
    "response_logits",
]
