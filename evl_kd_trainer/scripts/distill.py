"""Stage 2: distil a teacher VLM into a student with EVL-ECG (or a baseline method), from a recipe.

    accelerate launch examples/distill.py --recipe recipes/pulse_to_qwen.yaml

Any field of `EVLDistillConfig`, TRL's `ModelConfig` (the student) or `DataArguments` can be set in the
recipe and overridden on the command line (`--learning_rate 1e-4`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from trl import ModelConfig, get_peft_config

from evl_kd_trainer.scripts.args import DataArguments
from evl_kd_trainer.scripts.cli_errors import run_cli, user_input
from evl_kd_trainer.scripts.common import (
    apply_pixel_budget,
    configure_collator,
    load_datasets,
    model_init_kwargs,
    precheck_paths,
)
from evl_kd_trainer.scripts.recipe import parse_recipe_args
from evl_kd_trainer.trainer.config import EVLDistillConfig

PROG = "evl-kd distill"


def _model_keys(namespace: Any) -> tuple[str, ...]:
    from evl_kd_trainer.methods import get_method

    try:
        needs_teacher = get_method(namespace.kd_method).request(namespace).teacher
    except (KeyError, ValueError):
        needs_teacher = True  # an unknown method is reported by the config's own check, with the known names
    return ("model_name_or_path", "teacher_model_name_or_path") if needs_teacher else ("model_name_or_path",)


def precheck(namespace: Any) -> None:
    # Everything a user wrote is checked before any model loads, and the files before any hardware advice.
    precheck_paths(namespace, _model_keys(namespace))


def run(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """The script body; input errors raise (``main`` prints them as one line)."""
    with user_input():
        model_args, data_args, training_args = parse_recipe_args(
            (ModelConfig, DataArguments, EVLDistillConfig), argv, description=__doc__, prog=prog, precheck=precheck
        )
        # (the paths were checked by `precheck`, on the same values, before any config was built)
        from evl_kd_trainer.models.loading import load_processor
        from evl_kd_trainer.trainer.trainer import EVLDistillTrainer

        train_dataset, eval_dataset = load_datasets(data_args)
        training_args.model_init_kwargs = {**model_init_kwargs(model_args), **(training_args.model_init_kwargs or {})}
        trainer = EVLDistillTrainer(
            model=model_args.model_name_or_path,
            args=training_args,
            processing_class=apply_pixel_budget(load_processor(model_args.model_name_or_path), data_args),
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            peft_config=get_peft_config(model_args),
        )
        configure_collator(trainer.data_collator, data_args)
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    # As the alignment-handbook scripts do: train metrics and the log history (every logged term) beside the model.
    trainer.log_metrics("train", result.metrics)
    trainer.save_metrics("train", result.metrics)
    trainer.save_state()
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=data_args.dataset_path)
    return 0


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    return run_cli(lambda args: run(args, prog), argv, prog)


if __name__ == "__main__":
    sys.exit(main())
