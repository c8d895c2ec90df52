"""The demo's starting checkpoints: a tiny PULSE-like teacher and a tiny Qwen3-VL student, random weights.

The teacher mirrors PULSE-7B's layout at a small scale: a LLaVA-NeXT (Llama + CLIP) with PULSE's
``flat`` packing of ``(1 + crops) x patches`` visual tokens and the llava_v1 template; the student is a
Qwen3-VL. Their text widths differ (128 vs 96), as PULSE's 4096 differs from Qwen3-VL-2B's 2048, so the
distillation needs the aligners, as in the paper. Both tokenizers are trained on the demo's own
questions and answers so that a sample is a few dozen tokens: CPU time goes into learning, not padding.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from evl_kd_trainer.models.llava_flat import LlavaNextFlatForConditionalGeneration, LlavaNextFlatProcessor
from evl_kd_trainer.testing import build_tiny_llava_next, build_tiny_qwen3_vl
from evl_kd_trainer.testing.llava import TINY_CLIP_IMAGE_SIZE, TINY_CLIP_PATCH_SIZE, anyres_grid

TOKENIZER_VOCAB_SIZE = 1024

# Teacher: CLIP crops of 64 px in 16-px patches (16 tokens per crop); a 224x64 rhythm strip becomes the 1x3
# anyres grid (192x64, nearly the student's resolution) plus the base crop = 64 visual tokens (PULSE: 5 x 576 =
# 2880 for a 2x2 grid). Wider than the student (text 128 vs 96), with a deeper vision tower (3 layers vs 2).
TEACHER_CONFIG: dict[str, Any] = {
    "text_config": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
                    "num_key_value_heads": 4},
    "vision_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 3, "num_attention_heads": 4,
                      "image_size": 64, "patch_size": 16},
}  # fmt: skip
# Student: 32x32 pixels per visual token (patch 16, merge 2): a 224x64 strip gives 14 tokens.
STUDENT_CONFIG: dict[str, Any] = {
    "text_config": {"hidden_size": 96, "intermediate_size": 192, "num_hidden_layers": 2, "num_attention_heads": 4,
                    "num_key_value_heads": 2, "head_dim": 24,
                    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 4, 4]}},
    "vision_config": {"depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 4},
}  # fmt: skip
STUDENT_MAX_PIXELS = 224 * 64


def dataset_texts(*json_files: str | Path) -> tuple[str, ...]:
    """Every distinct question and answer text of ECGInstruct-style files (the tokenizers' extra corpus)."""
    texts: set[str] = set()
    for file in json_files:
        for record in json.loads(Path(file).read_text()):
            for turn in record["conversations"]:
                texts.add(turn["value"].replace("<image>", "").strip())
    return tuple(sorted(texts))


def build_demo_teacher(
    corpus: tuple[str, ...] = (), seed: int = 0
) -> tuple[LlavaNextFlatForConditionalGeneration, Any]:
    """The tiny flat LLaVA-NeXT teacher and its processor (llava_v1 template)."""
    tokenizer_kwargs = {"vocab_size": TOKENIZER_VOCAB_SIZE, "extra_corpus": corpus}
    vision = TEACHER_CONFIG["vision_config"]
    crop, patch = vision.get("image_size", TINY_CLIP_IMAGE_SIZE), vision.get("patch_size", TINY_CLIP_PATCH_SIZE)
    stock, stock_processor = build_tiny_llava_next(
        seed=seed, tokenizer_kwargs=tokenizer_kwargs, image_grid_pinpoints=anyres_grid(crop),
        image_seq_length=(crop // patch) ** 2, **TEACHER_CONFIG,
    )  # fmt: skip
    config = stock.config
    config.mm_patch_merge_type = "flat"
    torch.manual_seed(seed)
    model = LlavaNextFlatForConditionalGeneration(config).eval()
    processor = LlavaNextFlatProcessor(
        image_processor=stock_processor.image_processor,
        tokenizer=stock_processor.tokenizer,
        patch_size=stock_processor.patch_size,
        vision_feature_select_strategy=stock_processor.vision_feature_select_strategy,
        chat_template=stock_processor.chat_template,
        image_token=stock_processor.image_token,
        num_additional_image_tokens=stock_processor.num_additional_image_tokens,
    )
    return model, processor


def build_demo_student(corpus: tuple[str, ...] = (), seed: int = 0) -> tuple[Any, Any]:
    """The tiny Qwen3-VL student and its image-only processor (Qwen chat template)."""
    tokenizer_kwargs = {"vocab_size": TOKENIZER_VOCAB_SIZE, "extra_corpus": corpus}
    return build_tiny_qwen3_vl(
        seed=seed, max_pixels=STUDENT_MAX_PIXELS, tokenizer_kwargs=tokenizer_kwargs, **STUDENT_CONFIG
    )


def write_demo_models(out_dir: str | Path, *data_files: str | Path, seed: int = 0) -> dict[str, Path]:
    """Save the initial teacher and student under ``out_dir/{teacher,student}-init``; returns their paths."""
    corpus = dataset_texts(*data_files)
    paths = {"teacher": Path(out_dir) / "teacher-init", "student": Path(out_dir) / "student-init"}
    for name, build in (("teacher", build_demo_teacher), ("student", build_demo_student)):
        model, processor = build(corpus, seed=seed)
        model.save_pretrained(paths[name])
        processor.save_pretrained(paths[name])
    return paths
