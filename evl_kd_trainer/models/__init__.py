"""Model-specific knowledge: model families, loading, per-architecture adapters and feature capture.

* :class:`ModelFamily`: everything per-architecture, one file per family in :mod:`evl_kd_trainer.models.families`
  (found by the registry, :mod:`evl_kd_trainer.models.registry`); :func:`find_family` looks one up;
* :func:`get_adapter` -> :class:`ModelAdapter` for a model / config (its family's, keyed by the config);
* :func:`capture_features` / :func:`teacher_features` record hidden states and visual tokens;
* :func:`load_model` / :func:`load_processor` pick the right classes (PULSE's flat LLaVA-NeXT, our
  image-only Qwen-VL processors).
"""

from __future__ import annotations

from evl_kd_trainer.models.base import (
    ADAPTER_REGISTRY,
    ModelAdapter,
    register_adapter,
    unwrap_model,
)
from evl_kd_trainer.models.capture import CapturedFeatures, capture_features, teacher_features
from evl_kd_trainer.models.family import ModelFamily
from evl_kd_trainer.models.loading import load_model, load_processor
from evl_kd_trainer.models.registry import (
    families,
    find_family,
    find_family_for_processor,
    get_adapter,
    register_family,
    supported_model_types,
)

__all__ = [
    "ADAPTER_REGISTRY",
    "CapturedFeatures",
    "ModelAdapter",
    "ModelFamily",
    "capture_features",
    "families",
    "find_family",
    "find_family_for_processor",
    "get_adapter",
    "load_model",
    "load_processor",
    "register_adapter",
    "register_family",
    "supported_model_types",
    "teacher_features",
    "unwrap_model",
]
