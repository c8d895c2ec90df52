"""Cache the teacher's features for a distillation recipe: the teacher runs once, training runs read its features.

    evl-kd cache-teacher --recipe recipes/pulse_to_qwen.yaml --output cache/pulse-evl
    accelerate launch examples/cache_teacher.py --recipe recipes/pulse_to_qwen.yaml --output cache/pulse-evl

The recipe is the distillation recipe itself: its teacher, data, `kd_method` (which decides what is stored),
`teacher_hidden_layer`, `kd_token_scope`, templates and `teacher_max_length`. The student model is not loaded, only
its processor (its special tokens are escaped in the records' text as in training). Each process of an `accelerate
launch` writes its own shards; a rerun on the same folder keeps the finished shards and caches the rest.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trl import ModelConfig

from evl_kd_trainer.cache.arguments import CacheArguments
from evl_kd_trainer.scripts.args import DataArguments
from evl_kd_trainer.scripts.cli_errors import run_cli, user_input
from evl_kd_trainer.scripts.common import apply_pixel_budget, check_model_path, load_datasets, precheck_paths
from evl_kd_trainer.scripts.recipe import parse_recipe_args
from evl_kd_trainer.trainer.config import EVLDistillConfig

PROG = "evl-kd cache-teacher"


def precheck(namespace: Any) -> None:
    if namespace.output is None and namespace.teacher_cache_dir is None:
        raise ValueError(
            "`output` is required: the folder the cache is written to (--output DIR, or the recipe's "
            "teacher_cache_dir)."
        )
    precheck_paths(namespace, ("teacher_model_name_or_path",))
    if namespace.model_name_or_path is not None:  # only its processor is read
        check_model_path(namespace.model_name_or_path, "model_name_or_path")


def _options(cache_args: CacheArguments, data_args: DataArguments) -> dict[str, Any]:
    return {
        "compression": cache_args.compression,
        "logits_topk": cache_args.logits_topk,
        "visual_centroids": cache_args.visual_centroids,
        "kmeans_iterations": cache_args.kmeans_iterations,
        "pca_fit_samples": cache_args.pca_fit_samples,
        "truncation": "after_image",
        "special_token_text": data_args.special_token_text,
    }


def run(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """The script body; input errors raise (``main`` prints them as one line)."""
    with user_input():
        model_args, data_args, training_args, cache_args = parse_recipe_args(
            (ModelConfig, DataArguments, EVLDistillConfig, CacheArguments),
            argv, description=__doc__, prog=prog, precheck=precheck,
        )  # fmt: skip
        if cache_args.output is None:  # a cached recipe names its cache: build exactly the one it trains from
            cache_args.output = training_args.teacher_cache_dir
        from evl_kd_trainer.cache.request import features_for
        from evl_kd_trainer.cache.writer import build_teacher_cache, cache_fingerprint, check_resumable
        from evl_kd_trainer.models.loading import load_processor

        # What is stored, and whether the folder can be resumed, are decided before the teacher loads.
        features_for(training_args.kd_method, training_args, logits_topk=cache_args.logits_topk)
        teacher_path = training_args.teacher_model_name_or_path
        teacher_processor = load_processor(teacher_path)
        student_processor = None
        if model_args.model_name_or_path is not None:
            student_processor = apply_pixel_budget(load_processor(model_args.model_name_or_path), data_args)
        if not cache_args.overwrite:
            fingerprint = cache_fingerprint(
                training_args, teacher_path, teacher_processor, student_processor, **_options(cache_args, data_args)
            )
            check_resumable(Path(cache_args.output), fingerprint)
        if data_args.streaming:
            raise ValueError("`streaming`: cache-teacher needs an indexed dataset; set streaming to false.")
        train_dataset, _ = load_datasets(data_args)
    build_teacher_cache(
        cache_args.output,
        train_dataset,
        teacher_path,
        teacher_processor,
        training_args,
        student_processor=student_processor,
        batch_size=cache_args.batch_size,
        shard_size=cache_args.shard_size,
        max_shard_bytes=cache_args.max_shard_bytes,
        on_bad_image=data_args.on_bad_image,
        overwrite=cache_args.overwrite,
        progress=not training_args.disable_tqdm,
        **_options(cache_args, data_args),
    )
    return 0


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    return run_cli(lambda args: run(args, prog), argv, prog)


if __name__ == "__main__":
    sys.exit(main())
