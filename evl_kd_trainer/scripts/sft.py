"""Stage 1: supervised fine-tuning of a VLM on ECGInstruct-style data, from a recipe.

    accelerate launch examples/sft.py --recipe recipes/sft_qwen3vl_2b.yaml

Plain TRL `SFTTrainer` with our data pipeline (the student view of `DualViewCollator`: labels on the
assistant answers only). `projector_learning_rate` gives the model's own vision-language projector
(Qwen-VL's merger, LLaVA's multi_modal_projector) its own learning rate, as in the paper's Table 2.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from trl import ModelConfig, SFTConfig, SFTTrainer, get_peft_config

from evl_kd_trainer.scripts.args import DataArguments
from evl_kd_trainer.scripts.cli_errors import run_cli, user_input
from evl_kd_trainer.scripts.common import (
    apply_pixel_budget,
    collator_options,
    load_datasets,
    model_init_kwargs,
    precheck_paths,
)
from evl_kd_trainer.scripts.recipe import parse_recipe_args
from evl_kd_trainer.trainer.checkpoints import AtomicCheckpointMixin
from evl_kd_trainer.trainer.ecgbench import ECGBenchEvalMixin
from evl_kd_trainer.trainer.ecgbench_args import ECGBenchEvalArguments
from evl_kd_trainer.trainer.optim import (  # noqa: F401  (PROJECTOR_NAME_PATTERNS re-exported)
    PROJECTOR_NAME_PATTERNS,
    create_optimizer_with_own_lr,
    projector_name_patterns,
)
from evl_kd_trainer.trainer.secrets import SecretFreeArgs


@dataclass(repr=False)  # `SecretFreeArgs.__repr__` masks the Hub token
class VLMSFTConfig(SecretFreeArgs, ECGBenchEvalArguments, SFTConfig):
    """`SFTConfig` plus a learning rate for the model's own vision-language projector and ECG-Bench evaluation
    during training (the `ecgbench_eval_*` fields of `ECGBenchEvalArguments`, as in `EVLDistillConfig`). Pickled
    (`training_args.bin`) without the Hub token, like `EVLDistillConfig`.

    Parameters:
        projector_learning_rate (`float`, *optional*):
            Learning rate of the projector parameters (as the model's family names them: `visual.merger` for
            Qwen-VL, `multi_modal_projector` for LLaVA, ...); `None` trains them at `learning_rate`.
        allow_partial_resume (`bool`, *optional*, defaults to `False`):
            Resume from a checkpoint that lacks its optimizer or scheduler file, continuing with fresh state for
            it (with a warning). By default such a checkpoint is an error naming the file.
    """

    projector_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the vision-language projector (None: learning_rate)."}
    )
    allow_partial_resume: bool = field(
        default=False,
        metadata={"help": "Resume from a checkpoint missing its optimizer/scheduler file, with fresh state."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.projector_learning_rate is not None and self.projector_learning_rate <= 0:
            raise ValueError(f"`projector_learning_rate` must be > 0, got {self.projector_learning_rate}.")


class VLMSFTTrainer(ECGBenchEvalMixin, AtomicCheckpointMixin, SFTTrainer):
    """`SFTTrainer` whose optimizer gives the projector its own learning rate; checkpoints are renamed into place
    and `resume_from_checkpoint=True` (or `"True"`) takes the newest complete one (`AtomicCheckpointMixin`);
    `ecgbench_eval_*` scores ECG-Bench splits in its evaluations (`ECGBenchEvalMixin`)."""

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:

        projector_lr = getattr(self.args, "projector_learning_rate", None)
        if projector_lr is None:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        patterns = projector_name_patterns(opt_model)
        projector = [p for n, p in opt_model.named_parameters() if any(k in n for k in patterns)]
        return create_optimizer_with_own_lr(self, model, (projector, projector_lr))


PROG = "evl-kd sft"


def run(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """The script body; input errors raise (``main`` prints them as one line)."""
    with user_input():
        model_args, data_args, training_args = parse_recipe_args(
            (ModelConfig, DataArguments, VLMSFTConfig),
            argv,
            description=__doc__,
            prog=prog,
            precheck=lambda namespace: precheck_paths(namespace, ("model_name_or_path",)),
        )
        # (the paths were checked by `precheck`, on the same values, before any config was built)
        from evl_kd_trainer.data.collator import DualViewCollator
        from evl_kd_trainer.data.lengths import resolve_max_lengths
        from evl_kd_trainer.models.loading import load_model, load_processor

        train_dataset, eval_dataset = load_datasets(data_args)
        model = load_model(model_args.model_name_or_path, **model_init_kwargs(model_args))
        processor = apply_pixel_budget(load_processor(model_args.model_name_or_path), data_args)
        training_args.remove_unused_columns = False  # the collator reads the raw messages/images
        trainer = VLMSFTTrainer(
            model=model,
            args=training_args,
            data_collator=DualViewCollator(
                processor,
                max_length=resolve_max_lengths(training_args.max_length, None, model)[0],
                **collator_options(data_args),
            ),
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processor,
            peft_config=get_peft_config(model_args),
        )
        trainer.data_collator.set_fallback_dataset(train_dataset)
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
