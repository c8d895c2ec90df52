"""The teacher caches behind the step benchmark's cached cases (``bench_step.py --cached``).

For every method that reads a teacher, the case ``<method>_cached`` trains exactly as ``<method>`` does, on the same
samples, but reads the teacher's features from a cache (``teacher_cache_dir``) instead of running the teacher: no
teacher is built in that process, so its memory is what a cached run holds. The cache is built here, before any
case starts its timed steps (once per config and method, over the samples the run will train on), so building it
is never timed as part of a step; its own throughput and size are recorded beside the case.

The samples carry an ``id`` column (as ECGInstruct's records do), the key a cache looks records up by.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from step_configs import StepConfig, build_student, build_teacher, make_dataset

from evl_kd_trainer.methods import builtin_method_names, get_method
from evl_kd_trainer.testing.method_args import method_args

CACHED_SUFFIX = "_cached"
# The methods that read a teacher at their defaults: each has a cached twin.
TEACHER_METHODS = tuple(m for m in builtin_method_names() if get_method(m).request(method_args(kd_method=m)).teacher)
CACHED_CASES = tuple(m + CACHED_SUFFIX for m in TEACHER_METHODS)


def live_method(case: str) -> str | None:
    """The method a cached case reads the cache of (``"evl_cached"`` -> ``"evl"``); ``None`` for other cases."""
    method = case.removesuffix(CACHED_SUFFIX)
    return method if case.endswith(CACHED_SUFFIX) and method in TEACHER_METHODS else None


def cache_dir_of(root: str | Path, config: StepConfig, method: str) -> Path:
    """Where the cache of ``method`` on ``config`` lives under a run's cache root."""
    return Path(root) / config.name / method


def cache_run_args(method: str, config: StepConfig, device: torch.device, output_dir: str, **extra: Any) -> Any:
    """The ``EVLDistillConfig`` fields the cache's fingerprint reads, as the step benchmark's trainers set them."""
    from evl_kd_trainer.trainer import EVLDistillConfig

    return EVLDistillConfig(
        output_dir=output_dir,
        kd_method=method,
        max_length=config.max_length,
        teacher_max_length=config.teacher_max_length,
        use_cpu=device.type == "cpu",
        bf16=config.mixed_bf16,
        report_to="none",
        disable_tqdm=True,
        **extra,
    )


def build_step_cache(
    method: str, config: StepConfig, samples: int, device: torch.device, root: str | Path, compression: str = "bf16"
) -> dict[str, Any]:
    """Build (or resume: a finished cache returns at once) the cache of ``method`` over the benchmark's first
    ``samples`` samples; returns its build time, throughput and size."""
    from evl_kd_trainer.cache import build_teacher_cache

    directory = cache_dir_of(root, config, method)
    student, processor = build_student(config, "meta")  # only its processor: the student view's special tokens
    del student
    teacher, teacher_processor = build_teacher(config, device)
    dataset = make_dataset(config, samples, processor.tokenizer, with_ids=True)
    args = cache_run_args(method, config, device, str(directory.parent / f"{method}_args"))
    start = time.perf_counter()
    result = build_teacher_cache(
        directory, dataset, teacher, teacher_processor, args, student_processor=processor,
        compression=compression, batch_size=config.batch_size, progress=False,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    del teacher
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {
        "method": method,
        "compression": compression,
        "records": result.records,
        "written": result.written,
        "build_s": elapsed,
        "samples_per_s": result.written / elapsed if result.written else None,
        "bytes_per_sample": result.size["bytes_per_sample"],
        "shard_bytes": result.size["shard_bytes"],
        "extrapolated_bytes": result.size["extrapolated_bytes"],
    }
