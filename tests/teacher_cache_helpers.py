"""Shared pieces of the teacher-cache tests: tiny PULSE-like teacher (flat LLaVA-NeXT), Qwen3-VL student, data,
and the live teacher path the cache must reproduce (the trainer's own `teacher_features` call)."""

from __future__ import annotations

from typing import Any

import torch

from evl_kd_trainer.cache.extract import teacher_inputs_of
from evl_kd_trainer.cache.view import teacher_view_collator
from evl_kd_trainer.models import get_adapter, teacher_features
from evl_kd_trainer.testing import build_tiny_llava_next, build_tiny_qwen3_vl, make_tiny_vlm_dataset
from evl_kd_trainer.trainer import EVLDistillConfig

CPU_ARGS = dict(use_cpu=True, bf16=False, report_to="none", save_strategy="no", disable_tqdm=True)


def make_args(tmp_path, **overrides: Any) -> EVLDistillConfig:
    return EVLDistillConfig(output_dir=str(tmp_path / "run"), **{**CPU_ARGS, **overrides})


def tiny_world(n: int = 8, teacher_dtype: torch.dtype | None = None) -> dict[str, Any]:
    teacher, teacher_processor = build_tiny_llava_next(seed=1, flat=True, dtype=teacher_dtype)
    student, student_processor = build_tiny_qwen3_vl(seed=0)
    dataset = make_tiny_vlm_dataset(n=n, seed=0)
    dataset = dataset.add_column("id", [f"rec-{i}" for i in range(n)])
    return {
        "teacher": teacher,
        "teacher_processor": teacher_processor,
        "student": student,
        "student_processor": student_processor,
        "dataset": dataset,
    }


def live_teacher(world: dict[str, Any], args: EVLDistillConfig, rows: list[int]) -> tuple[dict, Any, list[str]]:
    """The teacher inputs, the live captured features and the record ids of ``rows`` collated together."""
    collator = teacher_view_collator(
        world["teacher_processor"], world["teacher"].config, args, world["student_processor"]
    )
    batch = collator([world["dataset"][i] for i in rows])
    inputs = teacher_inputs_of(batch, "cpu")
    teacher = world["teacher"]
    store = teacher_features(teacher, get_adapter(teacher), inputs, hidden_layer=args.teacher_hidden_layer, visual=True)
    return inputs, store, batch["record_ids"]
