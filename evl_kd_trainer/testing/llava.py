"""Tiny random LLaVA-NeXT and LLaVA-1.5 models (Vicuna-like Llama + CLIP) with offline processors.

The tiny LLaVA-NeXT mirrors PULSE-7B's layout at a small scale: CLIP features from layer -2 without
CLS (``vision_feature_select_strategy="default"``), a 2-layer GELU projector, and the anyres grid
``[[s, 2s], [2s, s], [2s, 2s], [3s, s], [s, 3s]]`` for a crop size ``s`` (PULSE: s = 336). Its text
width (96) deliberately differs from the tiny Qwen student's (64), as PULSE's 4096 differs from 2048.

``**overrides`` are keyword arguments of the top-level config; ``text_config`` / ``vision_config``
dicts are merged into the tiny defaults. ``tokenizer_kwargs`` go to :func:`build_tiny_llama_tokenizer`
(``vocab_size``, ``extra_corpus``). ``dtype`` is the dtype of every parameter (default: torch's default dtype),
whatever ``dtype`` the overrides' sub-configs carry (see :mod:`evl_kd_trainer.testing.construct`).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    CLIPImageProcessorPil,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
    LlavaProcessor,
)

from evl_kd_trainer.data.templates import LLAVA_V1_CHAT_TEMPLATE
from evl_kd_trainer.models.llava_flat import (
    FLAT_MERGE_TYPE,
    LlavaNextFlatForConditionalGeneration,
    LlavaNextFlatProcessor,
)
from evl_kd_trainer.testing.construct import construct_model, merge_config_overrides
from evl_kd_trainer.testing.tokenizers import LLAMA_IMAGE_TOKEN, build_tiny_llama_tokenizer

# Crop size s and CLIP patch size: (s / patch)^2 = 16 patch tokens per crop (PULSE: 576).
TINY_CLIP_IMAGE_SIZE = 32
TINY_CLIP_PATCH_SIZE = 8
# CLIP's normalisation constants (the real processors' defaults for LLaVA).
_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def anyres_grid(crop_size: int) -> list[list[int]]:
    """PULSE-7B's anyres grid ([[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]) for crop ``crop_size``."""
    s = crop_size
    return [[s, 2 * s], [2 * s, s], [2 * s, 2 * s], [3 * s, s], [s, 3 * s]]


def _tiny_llava_defaults(tokenizer: Any) -> dict[str, Any]:
    return {
        "text_config": {
            "model_type": "llama",
            "vocab_size": len(tokenizer),
            "hidden_size": 96,
            "intermediate_size": 192,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 4,
            "max_position_embeddings": 1024,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        "vision_config": {
            "model_type": "clip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 3,
            "num_attention_heads": 2,
            "image_size": TINY_CLIP_IMAGE_SIZE,
            "patch_size": TINY_CLIP_PATCH_SIZE,
            "projection_dim": 32,
        },
        "image_token_index": tokenizer.convert_tokens_to_ids(LLAMA_IMAGE_TOKEN),
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
        "projector_hidden_act": "gelu",
        "image_seq_length": (TINY_CLIP_IMAGE_SIZE // TINY_CLIP_PATCH_SIZE) ** 2,
    }


def build_tiny_llava_next(
    seed: int = 0,
    *,
    tokenizer_kwargs: dict[str, Any] | None = None,
    dtype: torch.dtype | str | None = None,
    flat: bool = False,
    **overrides: Any,
) -> tuple[LlavaNextForConditionalGeneration, LlavaNextProcessor]:
    """A tiny random ``LlavaNextForConditionalGeneration`` with a ``LlavaNextProcessor`` (llava_v1 template).

    Crops are 32x32 with 8-pixel patches (16 tokens per crop); the processor's per-image token count
    (unpadded features + newlines + base crop) is what the model's packing produces. ``flat=True`` builds
    PULSE-7B's packing instead, as a converted PULSE loads: ``LlavaNextFlatForConditionalGeneration`` and
    ``LlavaNextFlatProcessor``, ``(1 + grid crops) x 16`` tokens per image, no newline tokens.
    """
    tokenizer = build_tiny_llama_tokenizer(**(tokenizer_kwargs or {}))
    size = TINY_CLIP_IMAGE_SIZE
    defaults = {**_tiny_llava_defaults(tokenizer), "image_grid_pinpoints": anyres_grid(size)}
    merged = merge_config_overrides(defaults, overrides)
    if flat:
        merged["mm_patch_merge_type"] = FLAT_MERGE_TYPE
    config = LlavaNextConfig(**merged)
    model_cls = LlavaNextFlatForConditionalGeneration if flat else LlavaNextForConditionalGeneration
    model = construct_model(model_cls, config, seed, dtype)
    vision = config.vision_config
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": vision.image_size},
        crop_size={"height": vision.image_size, "width": vision.image_size},
        image_grid_pinpoints=config.image_grid_pinpoints,
        image_mean=_CLIP_MEAN,
        image_std=_CLIP_STD,
    )
    processor = (LlavaNextFlatProcessor if flat else LlavaNextProcessor)(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=vision.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        chat_template=LLAVA_V1_CHAT_TEMPLATE,
        image_token=LLAMA_IMAGE_TOKEN,
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped again by the "default" strategy
    )
    return model, processor


def build_tiny_llava(
    seed: int = 0,
    *,
    tokenizer_kwargs: dict[str, Any] | None = None,
    dtype: torch.dtype | str | None = None,
    **overrides: Any,
) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """A tiny random LLaVA-1.5 (``LlavaForConditionalGeneration``): one 32x32 crop -> 16 visual tokens."""
    tokenizer = build_tiny_llama_tokenizer(**(tokenizer_kwargs or {}))
    merged = merge_config_overrides(_tiny_llava_defaults(tokenizer), overrides)
    config = LlavaConfig(**merged)
    model = construct_model(LlavaForConditionalGeneration, config, seed, dtype)
    vision = config.vision_config
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": vision.image_size},
        crop_size={"height": vision.image_size, "width": vision.image_size},
        image_mean=_CLIP_MEAN,
        image_std=_CLIP_STD,
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=vision.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        chat_template=LLAVA_V1_CHAT_TEMPLATE,
        image_token=LLAMA_IMAGE_TOKEN,
        num_additional_image_tokens=1,
    )
    return model, processor
