"""Tiny random Qwen-VL models (Qwen3-VL, Qwen2.5-VL, Qwen2-VL) with working offline processors.

Shapes mirror the real models where the pipeline depends on them (patch 16 / 14, spatial merge 2,
M-RoPE sections, deepstack layers, ``out_hidden_size`` = text width) and are otherwise as small as
possible, so a builder call takes milliseconds and a forward pass a few more.

``**overrides`` are keyword arguments of the top-level config; ``text_config`` / ``vision_config``
dicts are merged into the tiny defaults (e.g. ``build_tiny_qwen3_vl(text_config={"num_hidden_layers": 3})``).
``dtype`` is the dtype of every parameter (default: torch's default dtype), whatever ``dtype`` the overrides'
sub-configs carry (see :mod:`evl_kd_trainer.testing.construct`).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)

# The image-only processors are production classes of the Qwen-VL family; re-exported here (their old home).
from evl_kd_trainer.models.families.qwen_vl import (
    QWEN2_VL_CHAT_TEMPLATE,
    QWEN_VL_CHAT_TEMPLATE,
    Qwen2_5_VLImageOnlyProcessor,
    Qwen2VLImageOnlyProcessor,
    Qwen3VLImageOnlyProcessor,
)
from evl_kd_trainer.testing.construct import construct_model, merge_config_overrides
from evl_kd_trainer.testing.tokenizers import build_tiny_qwen_tokenizer

# One merged visual token covers (patch * merge)^2 pixels: 32x32 for Qwen3-VL, 28x28 for Qwen2-VL.
# The pixel bounds below allow 4..16 visual tokens per image, enough to tell image sizes apart.
QWEN3_VL_MIN_PIXELS = 32 * 32 * 4
QWEN3_VL_MAX_PIXELS = 32 * 32 * 16
QWEN2_VL_MIN_PIXELS = 28 * 28 * 4
QWEN2_VL_MAX_PIXELS = 28 * 28 * 16


def _qwen_token_ids(tokenizer: Any) -> dict[str, int]:
    ids = tokenizer.convert_tokens_to_ids
    return {
        "image_token_id": ids("<|image_pad|>"),
        "video_token_id": ids("<|video_pad|>"),
        "vision_start_token_id": ids("<|vision_start|>"),
        "vision_end_token_id": ids("<|vision_end|>"),
    }


def _image_processor(patch_size: int, min_pixels: int, max_pixels: int) -> Qwen2VLImageProcessorPil:
    return Qwen2VLImageProcessorPil(
        patch_size=patch_size,
        merge_size=2,
        temporal_patch_size=2,
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


def tiny_qwen3_vl_config(vocab_size: int, token_ids: dict[str, int], **overrides: Any) -> Qwen3VLConfig:
    """The tiny ``Qwen3VLConfig``: text 64 wide, 2 layers, 4 heads of 16 (M-RoPE sections sum to 8);
    vision depth 2, width 32, patch 16, merge 2, deepstack at vision layer 0."""
    defaults: dict[str, Any] = {
        "text_config": {
            "vocab_size": vocab_size,
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 16,
            "max_position_embeddings": 1024,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            "pad_token_id": token_ids.pop("pad_token_id", None),
        },
        "vision_config": {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": 64,
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [0],
        },
        **token_ids,
    }
    merged = merge_config_overrides(defaults, overrides)
    # Keep the merger's output width equal to the LM width when only the text width was overridden.
    if "out_hidden_size" not in overrides.get("vision_config", {}):
        merged["vision_config"]["out_hidden_size"] = merged["text_config"]["hidden_size"]
    return Qwen3VLConfig(**merged)


def build_tiny_qwen3_vl(
    seed: int = 0,
    *,
    min_pixels: int = QWEN3_VL_MIN_PIXELS,
    max_pixels: int = QWEN3_VL_MAX_PIXELS,
    tokenizer_kwargs: dict[str, Any] | None = None,
    dtype: torch.dtype | str | None = None,
    **overrides: Any,
) -> tuple[Qwen3VLForConditionalGeneration, Qwen3VLImageOnlyProcessor]:
    """A tiny random ``Qwen3VLForConditionalGeneration`` and its image-only processor (deterministic in ``seed``).

    The processor's chat template is :data:`QWEN_VL_CHAT_TEMPLATE`; its outputs include
    ``mm_token_type_ids``. Visual tokens per image: ``prod(image_grid_thw) // 4``, 4..16 by default.
    ``tokenizer_kwargs`` go to :func:`build_tiny_qwen_tokenizer` (``vocab_size``, ``extra_corpus``).
    """
    return _build(
        tiny_qwen3_vl_config,
        Qwen3VLForConditionalGeneration,
        Qwen3VLImageOnlyProcessor,
        16,
        QWEN_VL_CHAT_TEMPLATE,
        seed,
        min_pixels,
        max_pixels,
        tokenizer_kwargs,
        overrides,
        dtype,
    )


def _qwen2_text_defaults(vocab_size: int, pad_token_id: int | None) -> dict[str, Any]:
    """Text config of the tiny Qwen2-VL / Qwen2.5-VL: 64 wide, 2 layers, 4 heads of 16 (M-RoPE sections sum to 8)."""
    return {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
        "pad_token_id": pad_token_id,
        "bos_token_id": None,
        "eos_token_id": None,
    }


def _build(
    config_fn: Any,
    model_cls: type,
    processor_cls: type,
    patch_size: int,
    chat_template: str,
    seed: int,
    min_pixels: int,
    max_pixels: int,
    tokenizer_kwargs: dict[str, Any] | None,
    overrides: dict[str, Any],
    dtype: torch.dtype | str | None = None,
) -> tuple[Any, Any]:
    """Tokenizer, config from ``config_fn``, seeded random model and image-only processor of one Qwen-VL family."""
    tokenizer = build_tiny_qwen_tokenizer(**(tokenizer_kwargs or {}))
    token_ids = {**_qwen_token_ids(tokenizer), "pad_token_id": tokenizer.pad_token_id}
    config = config_fn(len(tokenizer), token_ids, **overrides)
    model = construct_model(model_cls, config, seed, dtype)
    processor = processor_cls(
        image_processor=_image_processor(patch_size, min_pixels, max_pixels),
        tokenizer=tokenizer,
        chat_template=chat_template,
    )
    return model, processor


def tiny_qwen2_vl_config(vocab_size: int, token_ids: dict[str, int], **overrides: Any) -> Qwen2VLConfig:
    """The tiny ``Qwen2VLConfig``: text 64 wide, 2 layers, 4 heads of 16; vision depth 2, width 32, patch 14."""
    pad_token_id = token_ids.pop("pad_token_id", None)
    defaults: dict[str, Any] = {
        "text_config": _qwen2_text_defaults(vocab_size, pad_token_id),
        "vision_config": {
            "depth": 2,
            "embed_dim": 32,
            "hidden_size": 64,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        **token_ids,
    }
    merged = merge_config_overrides(defaults, overrides)
    if "hidden_size" not in overrides.get("vision_config", {}):
        merged["vision_config"]["hidden_size"] = merged["text_config"]["hidden_size"]
    return Qwen2VLConfig(**merged)


def build_tiny_qwen2_vl(
    seed: int = 0,
    *,
    min_pixels: int = QWEN2_VL_MIN_PIXELS,
    max_pixels: int = QWEN2_VL_MAX_PIXELS,
    tokenizer_kwargs: dict[str, Any] | None = None,
    dtype: torch.dtype | str | None = None,
    **overrides: Any,
) -> tuple[Qwen2VLForConditionalGeneration, Qwen2VLImageOnlyProcessor]:
    """A tiny random ``Qwen2VLForConditionalGeneration`` and its image-only processor (patch 14, merge 2)."""
    return _build(
        tiny_qwen2_vl_config,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageOnlyProcessor,
        14,
        QWEN_VL_CHAT_TEMPLATE,
        seed,
        min_pixels,
        max_pixels,
        tokenizer_kwargs,
        overrides,
        dtype,
    )


def tiny_qwen2_5_vl_config(vocab_size: int, token_ids: dict[str, int], **overrides: Any) -> Qwen2_5_VLConfig:
    """The tiny ``Qwen2_5_VLConfig``: text 64 wide, 2 layers; vision depth 2 (window attention in layer 0, full
    attention in layer 1, as the real model alternates), width 32, patch 14, merge 2."""
    pad_token_id = token_ids.pop("pad_token_id", None)
    defaults: dict[str, Any] = {
        "text_config": _qwen2_text_defaults(vocab_size, pad_token_id),
        "vision_config": {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 56,
            "fullatt_block_indexes": [1],
        },
        **token_ids,
    }
    merged = merge_config_overrides(defaults, overrides)
    if "out_hidden_size" not in overrides.get("vision_config", {}):
        merged["vision_config"]["out_hidden_size"] = merged["text_config"]["hidden_size"]
    return Qwen2_5_VLConfig(**merged)


def build_tiny_qwen2_5_vl(
    seed: int = 0,
    *,
    min_pixels: int = QWEN2_VL_MIN_PIXELS,
    max_pixels: int = QWEN2_VL_MAX_PIXELS,
    tokenizer_kwargs: dict[str, Any] | None = None,
    dtype: torch.dtype | str | None = None,
    **overrides: Any,
) -> tuple[Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLImageOnlyProcessor]:
    """A tiny random ``Qwen2_5_VLForConditionalGeneration`` and its image-only processor (patch 14, merge 2)."""
    return _build(
        tiny_qwen2_5_vl_config,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLImageOnlyProcessor,
        14,
        QWEN2_VL_CHAT_TEMPLATE,
        seed,
        min_pixels,
        max_pixels,
        tokenizer_kwargs,
        overrides,
        dtype,
    )
