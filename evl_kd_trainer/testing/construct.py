"""Build a random model from its config with every parameter in one dtype.

A transformers constructor honours the ``dtype`` of each sub-config on its own: Qwen3-VL-2B-Instruct's released
config carries ``text_config.dtype = "bfloat16"``, so ``Qwen3VLForConditionalGeneration(config)`` gives a bf16
language model beside an fp32 vision tower (``from_pretrained`` instead casts everything to one dtype). The
builders of :mod:`evl_kd_trainer.testing` therefore set one dtype on the config and all its sub-configs and
construct under it.
"""

from __future__ import annotations

from typing import Any

import torch


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    """``dtype`` as a ``torch.dtype``; ``None`` is torch's default dtype (float32 unless changed)."""
    if dtype is None:
        return torch.get_default_dtype()
    if isinstance(dtype, str):
        resolved = getattr(torch, dtype, None)
        if not isinstance(resolved, torch.dtype):
            raise ValueError(f"Unknown dtype {dtype!r} (e.g. 'float32', 'bfloat16').")
        dtype = resolved
    if not dtype.is_floating_point:
        raise ValueError(f"Model weights need a floating-point dtype, got {dtype}.")
    return dtype


def _set_dtype(config: Any, dtype: torch.dtype) -> None:
    config.dtype = dtype
    for key in getattr(config, "sub_configs", {}) or {}:
        sub_config = getattr(config, key, None)
        if sub_config is not None:
            _set_dtype(sub_config, dtype)


def construct_model(model_cls: type, config: Any, seed: int, dtype: torch.dtype | str | None = None) -> Any:
    """``model_cls(config)`` in eval mode, seeded with ``seed``, every parameter in ``dtype`` (``config`` and its
    sub-configs record it, as after ``from_pretrained``)."""
    dtype = resolve_dtype(dtype)
    _set_dtype(config, dtype)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        torch.manual_seed(seed)
        model = model_cls(config)
    finally:
        torch.set_default_dtype(previous)
    return model.eval()


def merge_config_overrides(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A tiny builder's config values: ``overrides`` over ``defaults``, with ``text_config`` / ``vision_config``
    dicts merged key by key (overriding one width keeps the rest of the sub-config)."""
    merged = dict(defaults)
    for key, value in overrides.items():
        if key in ("text_config", "vision_config") and isinstance(value, dict):
            merged[key] = {**defaults.get(key, {}), **value}
        else:
            merged[key] = value
    return merged
