"""A tiny random SmolVLM (``SmolVLMForConditionalGeneration``) with a working offline image-only processor.

Shapes keep what the pipeline depends on (a pixel-shuffle connector with ``scale_factor`` 2, square crops equal to
the vision encoder's input, a global view beside the grid crops, a Llama text model) and are otherwise as small as
possible: 32-px crops in 4-px patches give 64 patches, 16 visual tokens per crop; images are resized to a longest edge
of 64 px, i.e. a grid of 1 x 2 / 2 x 1 (elongated images, like a rhythm strip) or 2 x 2 crops plus the global view:
3 or 5 crops, 48 or 80 visual tokens per image. The text model is 64 wide (the tiny Qwen students' width;
the tiny PULSE-like teacher's is 96), 2 layers.

The tokenizer is a byte-level BPE (SmolVLM's SmolLM2 tokenizer is one) trained offline on the built-in corpus, with
SmolVLM's special tokens: ``<|im_start|>`` (bos), ``<end_of_utterance>`` (eos), ``<|im_end|>`` (pad, as in the
Instruct releases), ``<fake_token_around_image>``, ``<global-img>``, ``<image>`` and the ``<row_i_col_j>`` tags.

``**overrides`` are keyword arguments of the top-level config; ``text_config`` / ``vision_config`` dicts are merged
into the tiny defaults. ``dtype`` is the dtype of every parameter (see :mod:`evl_kd_trainer.testing.construct`).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import GPT2Tokenizer, SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMImageProcessorPil

from evl_kd_trainer.models.families.smolvlm import SMOLVLM_CHAT_TEMPLATE, SmolVLMImageOnlyProcessor, tokens_per_crop
from evl_kd_trainer.testing.construct import construct_model, merge_config_overrides
from evl_kd_trainer.testing.tokenizers import byte_level_bpe_vocab

SMOLVLM_IMAGE_TOKEN = "<image>"
SMOLVLM_SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<end_of_utterance>",
    "<fake_token_around_image>",
    "<global-img>",
    SMOLVLM_IMAGE_TOKEN,
    *(f"<row_{row}_col_{col}>" for row in range(1, 7) for col in range(1, 7)),
)
# Crop (= vision encoder input) and patch size: (32 / 4)^2 = 64 patches, / scale_factor^2 = 16 tokens per crop.
TINY_SMOLVLM_CROP_SIZE = 32
TINY_SMOLVLM_PATCH_SIZE = 4
TINY_SMOLVLM_LONGEST_EDGE = 64
# The conversation's fixed words, so that they become few tokens.
_CORPUS = ("User: Assistant: System:",)


def build_tiny_smolvlm_tokenizer(vocab_size: int = 512, extra_corpus: tuple[str, ...] = ()) -> GPT2Tokenizer:
    """A byte-level BPE ``GPT2Tokenizer`` with SmolVLM's special tokens appended after the trained vocabulary (so
    ``len(tokenizer)`` is the model's vocab size)."""
    vocab, merges = byte_level_bpe_vocab(vocab_size, _CORPUS + tuple(extra_corpus))
    for token in SMOLVLM_SPECIAL_TOKENS:
        vocab.setdefault(token, len(vocab))
    tokenizer = GPT2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|im_end|>",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(SMOLVLM_SPECIAL_TOKENS)})
    return tokenizer


def tiny_smolvlm_config(tokenizer: Any, **overrides: Any) -> SmolVLMConfig:
    """The tiny ``SmolVLMConfig``: Llama text 64 wide, 2 layers, 4 heads (2 KV); vision 32 wide, 2 layers, 32-px input
    in 4-px patches; pixel shuffle by 2."""
    defaults: dict[str, Any] = {
        "text_config": {
            "model_type": "llama",
            "vocab_size": len(tokenizer),
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 1024,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        "vision_config": {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": TINY_SMOLVLM_CROP_SIZE,
            "patch_size": TINY_SMOLVLM_PATCH_SIZE,
        },
        "scale_factor": 2,
        "image_token_id": tokenizer.convert_tokens_to_ids(SMOLVLM_IMAGE_TOKEN),
        "pad_token_id": tokenizer.pad_token_id,
    }
    return SmolVLMConfig(**merge_config_overrides(defaults, overrides))


def build_tiny_smolvlm(
    seed: int = 0,
    *,
    longest_edge: int = TINY_SMOLVLM_LONGEST_EDGE,
    tokenizer_kwargs: dict[str, Any] | None = None,
    dtype: torch.dtype | str | None = None,
    **overrides: Any,
) -> tuple[SmolVLMForConditionalGeneration, SmolVLMImageOnlyProcessor]:
    """A tiny random ``SmolVLMForConditionalGeneration`` and its image-only processor (deterministic in ``seed``).

    The processor's chat template is :data:`~evl_kd_trainer.models.families.smolvlm.SMOLVLM_CHAT_TEMPLATE`; images are
    resized to ``longest_edge`` and cut into crops of the vision encoder's input size. ``tokenizer_kwargs`` go to
    :func:`build_tiny_smolvlm_tokenizer` (``vocab_size``, ``extra_corpus``).
    """
    tokenizer = build_tiny_smolvlm_tokenizer(**(tokenizer_kwargs or {}))
    config = tiny_smolvlm_config(tokenizer, **overrides)
    model = construct_model(SmolVLMForConditionalGeneration, config, seed, dtype)
    vision = config.vision_config
    image_processor = SmolVLMImageProcessorPil(
        size={"longest_edge": longest_edge},
        max_image_size={"longest_edge": vision.image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    processor = SmolVLMImageOnlyProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=tokens_per_crop(config),
        chat_template=SMOLVLM_CHAT_TEMPLATE,
    )
    return model, processor


__all__ = [
    "SMOLVLM_SPECIAL_TOKENS",
    "build_tiny_smolvlm",
    "build_tiny_smolvlm_tokenizer",
    "tiny_smolvlm_config",
]
