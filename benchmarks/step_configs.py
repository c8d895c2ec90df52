"""Model, data and batch settings of the training-step benchmark (``bench_step.py``), one per ``--config``.

- ``tiny``: the test models of :mod:`evl_kd_trainer.testing` as they are (student width 64, teacher 96).
- ``small``: the same builders widened through their config overrides: student Qwen3-VL text 256 wide,
  teacher LLaVA-NeXT text 512 wide (the paper's 1 : 2 student/teacher width ratio, 2048 : 4096), 4 layers each,
  and larger crops so the teacher sees several times more visual tokens than the student, as PULSE does.
- ``gpu-full``: the paper's sizes with random weights, built from configs (no download): student Qwen3-VL-2B
  (text 2048 x 28 layers, vocab 151936, its 24-layer ViT with deepstack at 5/11/17), teacher PULSE-7B as
  ``evl-kd convert-llava`` loads it (flat LLaVA-NeXT: Vicuna-7B text 4096 x 32 layers, vocab 32001 = 32000 +
  ``<image>``, CLIP ViT-L/14-336, PULSE's five-resolution anyres grid, ``(1 + crops) x 576`` visual tokens),
  sequences capped at 4096 tokens, teacher in bf16, student trained in bf16 mixed precision with gradient
  checkpointing.
- ``real-width-shallow``: the same widths, vocabularies and full-depth vision towers with 2 decoder layers in
  each language model, for CPU: what the real widths cost (LM heads over 151936 / 32001 entries, 2880 teacher
  visual tokens) without the depth. Student fp32, teacher bf16 (the recipes' dtypes), no mixed precision.

Every model is built in one dtype, passed to the builders (a constructor alone would honour a sub-config's own
``dtype``, see :mod:`evl_kd_trainer.testing.construct`).

The tokenizers are the tiny offline ones (a few hundred tokens) in every config: the real ones cannot be
downloaded. Token ids therefore only use the bottom of the real vocabularies, which changes no shape and no
amount of compute: embedding lookups, the LM heads and every attention/MLP run at full size.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from evl_kd_trainer.testing import anyres_grid, build_tiny_llava_next, build_tiny_qwen3_vl, make_tiny_vlm_dataset

# Report-like sentences used to lengthen answers to a target token count (ECGInstruct answers run from a
# word to a few hundred tokens).
_REPORT_SENTENCES = (
    "The rhythm is sinus rhythm with a heart rate of 72 bpm.",
    "The PR interval is 160 ms, the QRS duration 90 ms and the QT interval 400 ms.",
    "There is ST elevation in leads II, III and aVF with reciprocal ST depression in aVL.",
    "T wave inversion is seen in V1 to V3.",
    "Findings are consistent with an inferior myocardial infarction.",
    "No atrial fibrillation, no bundle branch block, no first degree AV block.",
    "Lead II rhythm strip shows regular beats.",
)


@dataclass(frozen=True)
class StepConfig:
    """Everything one benchmark configuration fixes: model sizes, images, text length and batch shape."""

    name: str
    description: str
    student_overrides: dict[str, Any]
    teacher_overrides: dict[str, Any]
    student_pixels: tuple[int, int] | None  # (min, max) pixels of the student's image processor; None: default
    image_sizes: tuple[tuple[int, int], ...]  # (W, H), cycled; one size per config keeps padding out of the times
    answer_tokens: int  # answers are lengthened to about this many student tokens (0: the short test answers)
    batch_size: int
    grad_accum: int = 1
    max_length: int | None = 1024
    teacher_max_length: int | None = None
    student_dtype: str = "float32"  # weights; bf16 mixed precision (autocast) is switched on by `mixed_bf16`
    teacher_dtype: str = "float32"
    teacher_flat: bool = False  # PULSE's flat packing (a converted PULSE) instead of stock LLaVA-NeXT's unpadding
    mixed_bf16: bool = False
    gradient_checkpointing: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def with_overrides(self, **changes: Any) -> StepConfig:
        """A copy with command-line overrides (batch size, accumulation, answer length) applied."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


TINY = StepConfig(
    name="tiny",
    description="test models as built by evl_kd_trainer.testing: student Qwen3-VL text 64 x 2 layers, "
    "teacher LLaVA-NeXT text 96 x 2 layers; 96x64 images: 6 student / 70 teacher visual tokens",
    student_overrides={},
    teacher_overrides={},
    student_pixels=None,
    image_sizes=((96, 64),),
    answer_tokens=0,
    batch_size=2,
)

SMALL = StepConfig(
    name="small",
    description="student Qwen3-VL text 256 x 4 layers (ViT 128 x 4, deepstack 1..3), teacher LLaVA-NeXT "
    "text 512 x 4 layers (CLIP 128 x 4, 64-px crops, anyres); 256x128 images: 32 student / 200 teacher visual "
    "tokens; answers ~48 tokens",
    student_overrides={
        "text_config": {
            "hidden_size": 256,
            "intermediate_size": 768,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "head_dim": 64,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [8, 12, 12]},
        },
        "vision_config": {
            "depth": 4,
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_heads": 4,
            "num_position_embeddings": 256,
            "deepstack_visual_indexes": [1, 2, 3],
        },
    },
    teacher_overrides={
        "text_config": {
            "hidden_size": 512,
            "intermediate_size": 1024,
            "num_hidden_layers": 4,
            "num_attention_heads": 8,
            "num_key_value_heads": 8,
        },
        "vision_config": {
            "hidden_size": 128,
            "intermediate_size": 256,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "image_size": 64,
            "patch_size": 8,
        },
        "image_grid_pinpoints": anyres_grid(64),
        "image_seq_length": 64,
    },
    student_pixels=(32 * 32 * 16, 32 * 32 * 64),
    image_sizes=((256, 128),),
    answer_tokens=48,
    batch_size=4,
)

# Qwen3-VL-2B-Instruct's published config (text and vision), with the tiny tokenizer's special-token ids.
_QWEN3_VL_2B = {
    "text_config": {
        "vocab_size": 151936,
        "hidden_size": 2048,
        "intermediate_size": 6144,
        "num_hidden_layers": 28,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "max_position_embeddings": 262144,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5000000.0,
            "mrope_section": [24, 20, 20],
            "mrope_interleaved": True,
        },
    },
    "vision_config": {
        "depth": 24,
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_heads": 16,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": 2048,
        "num_position_embeddings": 2304,
        "deepstack_visual_indexes": [5, 11, 17],
        "hidden_act": "gelu_pytorch_tanh",
    },
    "tie_word_embeddings": True,
}

# PULSE-7B's config.json lists its anyres grid as original LLaVA's (width, height) pairs; the converter swaps each
# into transformers' (height, width), keeping their order (the first listed wins ties).
PULSE_GRID_WH = anyres_grid(336)  # [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]

# PULSE-7B converted (evl-kd convert-llava): Vicuna-7B v1.5 + CLIP ViT-L/14-336 (layer -2, no CLS), 2-layer GELU
# projector, PULSE's grid, vocab 32000 + <image> (pad = <unk>); built flat (``teacher_flat``).
_PULSE_7B = {
    "text_config": {
        "vocab_size": 32001,
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
    },
    "vision_config": {
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "image_size": 336,
        "patch_size": 14,
        "projection_dim": 768,
        "hidden_act": "quick_gelu",
    },
    "image_grid_pinpoints": [[height, width] for width, height in PULSE_GRID_WH],
    "image_seq_length": 576,
    "tie_word_embeddings": False,
}


def _shallow(overrides: dict[str, Any], layers: int) -> dict[str, Any]:
    """``overrides`` with ``layers`` decoder layers in the language model (the vision tower keeps its depth)."""
    return {**overrides, "text_config": {**overrides["text_config"], "num_hidden_layers": layers}}


GPU_FULL = StepConfig(
    name="gpu-full",
    description="random-weight Qwen3-VL-2B student (bf16 mixed precision, fp32 master weights, gradient "
    "checkpointing) and PULSE-7B teacher (flat LLaVA-NeXT Vicuna-7B, vocab 32001, bf16); 672x672 ECG-like images "
    "(49 student visual tokens at the paper's 50176 max pixels; base + 2x2 grid = 5 x 576 = 2880 teacher visual "
    "tokens); sequences capped at 4096",
    student_overrides=_QWEN3_VL_2B,
    teacher_overrides=_PULSE_7B,
    student_pixels=(784, 50176),
    image_sizes=((672, 672),),
    answer_tokens=256,
    batch_size=2,
    grad_accum=24,  # 2 x 24 = the paper's global batch of 48 on one device
    max_length=4096,
    teacher_max_length=4096,
    student_dtype="float32",
    teacher_dtype="bfloat16",
    teacher_flat=True,
    mixed_bf16=True,
    gradient_checkpointing=True,
)

REAL_WIDTH_SHALLOW = StepConfig(
    name="real-width-shallow",
    description="gpu-full's models with 2 decoder layers each, for CPU: Qwen3-VL-2B widths (text 2048, vocab "
    "151936, 24-layer ViT) fp32 and PULSE-7B widths (text 4096, vocab 32001, flat, 24-layer CLIP ViT-L/14-336) "
    "bf16; 672x672 images: 49 student / 2880 teacher visual tokens; answers ~256 tokens; batch 1",
    student_overrides=_shallow(_QWEN3_VL_2B, 2),
    teacher_overrides=_shallow(_PULSE_7B, 2),
    student_pixels=(784, 50176),
    image_sizes=((672, 672),),
    answer_tokens=256,
    batch_size=1,
    max_length=4096,
    teacher_max_length=4096,
    student_dtype="float32",
    teacher_dtype="bfloat16",
    teacher_flat=True,
)

CONFIGS: dict[str, StepConfig] = {c.name: c for c in (TINY, SMALL, GPU_FULL, REAL_WIDTH_SHALLOW)}


def build_student(config: StepConfig, device: torch.device | str = "cpu") -> tuple[Any, Any]:
    """The student (Qwen3-VL) and its processor, weights built directly on ``device`` in the config's dtype (random
    init straight in bf16 on the GPU where asked: no fp32 copy of a 7B model)."""
    pixels = {} if config.student_pixels is None else dict(zip(("min_pixels", "max_pixels"), config.student_pixels))
    with torch.device(device):
        model, processor = build_tiny_qwen3_vl(seed=0, dtype=config.student_dtype, **pixels, **config.student_overrides)
    return model, processor


def build_teacher(config: StepConfig, device: torch.device | str = "cpu") -> tuple[Any, Any]:
    """The teacher (LLaVA-NeXT, flat as a converted PULSE where the config says so) and its processor, weights
    built directly on ``device`` in the config's dtype."""
    with torch.device(device):
        model, processor = build_tiny_llava_next(
            seed=1, dtype=config.teacher_dtype, flat=config.teacher_flat, **config.teacher_overrides
        )
    model.requires_grad_(False)
    return model, processor


def lengthen(answer: str, tokenizer: Any, target_tokens: int, seed: int) -> str:
    """``answer`` followed by report sentences until it is about ``target_tokens`` tokens of ``tokenizer``."""
    if target_tokens <= 0:
        return answer
    rng = random.Random(seed)
    text = answer
    while len(tokenizer(text, add_special_tokens=False)["input_ids"]) < target_tokens:
        text = f"{text} {rng.choice(_REPORT_SENTENCES)}"
    return text


def make_dataset(config: StepConfig, n: int, student_tokenizer: Any, seed: int = 0, with_ids: bool = False) -> Any:
    """``n`` one-image ECG Q&A samples in TRL's ``messages`` + ``images`` format, answers lengthened; ``with_ids``
    adds an ``id`` column (as ECGInstruct's records have: the key a teacher cache looks records up by)."""
    from datasets import Dataset

    base = make_tiny_vlm_dataset(n=n, seed=seed, sizes=config.image_sizes)
    rows = []
    for i in range(n):
        row = base[i]
        messages = row["messages"]
        answer = messages[1]["content"][0]["text"]
        long_answer = lengthen(answer, student_tokenizer, config.answer_tokens, seed=seed * 1000 + i)
        messages = [messages[0], {"role": "assistant", "content": [{"type": "text", "text": long_answer}]}]
        rows.append({"messages": messages, "images": row["images"]})
        if with_ids:
            rows[-1]["id"] = f"bench-{seed}-{i}"
    return Dataset.from_list(rows)


def to_prompt_completion(dataset: Any) -> Any:
    """The same samples as ``prompt`` / ``completion`` / ``images`` rows, the format TRL's GOLD trainer reads."""
    from datasets import Dataset

    return Dataset.from_list(
        [{"prompt": [r["messages"][0]], "completion": [r["messages"][1]], "images": r["images"]} for r in dataset]
    )


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
