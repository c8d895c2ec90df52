"""Model-specific knowledge: loading, per-architecture adapters and feature capture.

* :func:`get_adapter` -> :class:`ModelAdapter` for a model / config (keyed by ``config.model_type``);
* :func:`capture_features` / :func:`teacher_features` record hidden states and visual tokens;
* :func:`load_model` / :func:`load_processor` pick the right classes (PULSE's flat LLaVA-NeXT, our
  image-only Qwen-VL processors).
"""

from __future__ import annotations

from evl_kd_trainer.models.base import (
    ADAPTER_REGISTRY,
    ModelAdapter,
    get_adapter,
    register_adapter,
    supported_model_types,
    unwrap_model,
)
from evl_kd_trainer.models.capture import CapturedFeatures, capture_features, teacher_features
from evl_kd_trainer.models.loading import load_model, load_processor

__all__ = [
    "ADAPTER_REGISTRY",
    "CapturedFeatures",
    "ModelAdapter",
    "capture_features",
    "get_adapter",
    "load_model",
    "load_processor",
    "register_adapter",
    "supported_model_types",
    "teacher_features",
    "unwrap_model",
]
