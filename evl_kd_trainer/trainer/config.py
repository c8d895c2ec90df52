"""`EVLDistillConfig`: `trl.SFTConfig` plus the knobs of EVL-ECG distillation (paper section 2.4, Table 4)."""

from __future__ import annotations

import dataclasses
import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainingArguments
from trl import SFTConfig

from evl_kd_trainer.methods.evl.config import MHCA_REDUCTIONS  # noqa: F401  (re-exported: the old import path)
from evl_kd_trainer.methods.registry import get_method, method_config_classes
from evl_kd_trainer.trainer.ecgbench_args import ECGBenchEvalArguments
from evl_kd_trainer.trainer.secrets import SecretFreeArgs

KD_TOKEN_SCOPES = ("all", "response")
NONFINITE_ACTIONS = ("error", "skip")
# Each built-in method's own fields (`methods/<name>/config.py`) join the config as a mixin: one place per default.
METHOD_CONFIGS = method_config_classes()


@dataclass(repr=False)  # `SecretFreeArgs.__repr__` masks the Hub token; a generated one would print it
class EVLDistillConfig(SecretFreeArgs, ECGBenchEvalArguments, *METHOD_CONFIGS, SFTConfig):
    r"""
    Configuration of [`EVLDistillTrainer`]: everything of [`~trl.SFTConfig`] plus the distillation settings.

    The training objective (paper section 2.4) is

        L = (1 - alpha) * L_CE + alpha * (lambda_mhca * L_mhca + lambda_rel * L_rel + lambda_ot * L_ot)

    and the defaults are the paper's best values (Table 4: alpha 0.3, lambda_m 1.0, lambda_r 0.03,
    lambda_ot 0.1, h 8) with the Sinkhorn regularisation fixed at 0.1 (Appendix C.1).

    A pickled config (`training_args.bin` in `output_dir`, checkpoints and Hub pushes) holds no Hub token:
    `hub_token` and any `token` inside `*_init_kwargs` are stored as `None` (and masked in `str` / `to_dict`).

    Parameters:
        > Parameters that control the teacher

        teacher_model_name_or_path (`str`, *optional*):
            Path or Hub id of the teacher, used when the trainer gets no `teacher_model`. LLaVA-NeXT checkpoints in
            the original LLaVA format (PULSE-7B) must first go through `evl-kd convert-llava`.
        teacher_model_init_kwargs (`dict[str, Any]`, *optional*):
            Keyword arguments for loading the teacher from a path (e.g. `{"dtype": "bfloat16"}`).
        teacher_cache_dir (`str`, *optional*):
            A teacher-feature cache built by `evl-kd cache-teacher` for this recipe: the teacher is then neither
            loaded nor run, and each batch's teacher features are read from the cache. The cache must match the run
            (teacher weights, processor, template, `teacher_max_length`, layer, positions: an error names the first
            field that differs) and hold every training record (an error names the first missing ids).
            `teacher_model_name_or_path` is still read, to fingerprint the teacher's weights (not loaded).

        > Parameters that control the distillation objective

        kd_method (`str`, *optional*, defaults to `"evl"`):
            Distillation method, by registered name: `"evl"` (EVL-ECG) or a baseline of the paper's Table 1
            (`"sft"`, `"uld"`, `"multilevel_ot"`, `"dskd"`, `"emkd"`), or any other built-in or registered method.
            Each method's own fields are listed below, under its name.
        alpha (`float`, *optional*, defaults to `0.3`):
            Weight of the distillation terms against the cross-entropy, in [0, 1], for the methods that mix
            convexly (`evl` and the methods that keep the default mix). `0` reproduces SFT exactly.
        student_hidden_layer (`int`, *optional*, defaults to `-1`):
            Student layer whose hidden states feed L_mhca and L_rel: `-1` is the final-norm output, `k >= 0` the
            output of decoder layer `k`.
        teacher_hidden_layer (`int`, *optional*, defaults to `-1`):
            Same for the teacher.
        kd_token_scope (`str`, *optional*, defaults to `"all"`):
            Token positions L_mhca and L_rel use: `"all"` (every non-padding token of each view) or `"response"`
            (only the assistant answer tokens of each view).
        aligner_learning_rate (`float`, *optional*, defaults to `5e-4`):
            Learning rate of the aligner modules (cross-attention aligner and projectors), trained in their own
            parameter group ("projector LR" of the paper's Tables 2-3).
        projector_learning_rate (`float`, *optional*):
            Learning rate of the student's own vision-language projector (Qwen-VL's merger), as in stage 1; `None`
            trains it at `learning_rate`. The paper's Table 3 gives one "projector LR" (5e-4) for the KD phase;
            its recipe applies it to the aligners and to this projector alike.
        nonfinite_kd_action (`str`, *optional*, defaults to `"error"`):
            What to do when a distillation term, the cross-entropy or the gradient norm of an update is NaN or
            infinite (checked on all ranks together, before the optimizer steps): `"error"` raises naming the step
            and what was non-finite, before any weight changes; `"skip"` drops the step's whole optimizer update,
            counts it (`skipped_nonfinite_steps` in the logs), logs the step's real loss and leaves it out of
            `train_loss`. `"skip"` is refused under DeepSpeed and fp16 (their own optimizer step / loss scaler
            cannot be told to skip). Under fp16 the loss scaler handles non-finite gradients itself (only the loss
            terms are checked); under DeepSpeed the gradient norm is read after the engine's own step (which its
            overflow check drops under fp32/fp16), so `"error"` stops at that step, before anything is saved. In
            evaluation nothing is skipped and `eval_loss` comes out NaN. Saving refuses weights holding NaN or inf.
        max_consecutive_skipped_steps (`int`, *optional*, defaults to `10`):
            Under `nonfinite_kd_action="skip"`, the run stops with an error once more than this many updates in a
            row were skipped (a diverged run would otherwise "train" on without learning anything).
        teacher_max_length (`int`, *optional*):
            Longest teacher view in tokens (image tokens included); longer samples are cut after their image or
            dropped (counted in the collator's `stats`) before any forward. `None`: the teacher's own context
            (`max_position_embeddings` of its text config; 4096 for PULSE's Vicuna). `max_length` (`None`) likewise
            defaults to the student's context.
        teacher_chat_template (`str`, *optional*):
            Name (`"llava_v1"`, `"qwen_vl"`, `"qwen2_vl"`) or Jinja text of the teacher's conversation template,
            when its processor carries none or the wrong one.
        student_chat_template (`str`, *optional*):
            Same for the student. By default the student processor's template is used; one without
            `{% generation %}` markers (the released Qwen-VL templates) is replaced by the registered template
            of its family, which renders the same conversation and marks the answers for the labels.

        > Parameters that control resuming

        allow_partial_resume (`bool`, *optional*, defaults to `False`):
            Resume from a checkpoint that lacks its optimizer, scheduler or aligner file, continuing with fresh
            state for what is missing (with a warning). By default such a checkpoint is an error naming the file.
            `resume_from_checkpoint=True` takes the newest complete `checkpoint-N` of `output_dir` either way.

        > Parameters that control ECG-Bench evaluation during training (from [`ECGBenchEvalArguments`], shared with
        > the SFT script's config; see its docstring for the details)

        ecgbench_eval_splits (`list[str]`, *optional*):
            Held-out splits to generate and score while training, logged as `eval_<split>_<metric>`: split names
            with `ecgbench_eval_data_files`, or split files named as ECG-Bench names them. `None`: off.
        ecgbench_eval_data_files (`list[str]`, *optional*):
            One split file (`.parquet`, `.json`, `.jsonl`) per name of `ecgbench_eval_splits`.
        ecgbench_eval_image_root (`str`, *optional*):
            Folder relative image paths start from; default: each data file's folder.
        ecgbench_eval_steps (`int`, *optional*):
            Score every N optimizer steps and at the last step (also under `eval_strategy="no"`); `None`: at each
            `eval_strategy` evaluation.
        ecgbench_eval_max_samples (`int`, *optional*):
            Score only the first N records of each split.
        ecgbench_eval_max_new_tokens (`int`, *optional*, defaults to `1024`):
            Generation budget per answer (cut answers are counted in `eval_<split>_hit_max_new_tokens`).
        ecgbench_eval_batch_size (`int`, *optional*, defaults to `8`):
            Questions per generation batch.

        {method_parameters}
    """

    teacher_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Path or Hub id of the teacher, used when the trainer gets no `teacher_model`."},
    )
    teacher_model_init_kwargs: dict[str, Any] | str | None = field(
        default=None,
        metadata={"help": 'Keyword arguments for loading the teacher from a path (e.g. `{"dtype": "bfloat16"}`).'},
    )
    teacher_cache_dir: str | None = field(
        default=None,
        metadata={"help": "Teacher-feature cache from `evl-kd cache-teacher`: the teacher is not loaded or run."},
    )
    kd_method: str = field(
        default="evl",
        metadata={"help": "Distillation method by registered name (evl, sft, uld, multilevel_ot, dskd, emkd, ...)."},
    )
    alpha: float = field(
        default=0.3, metadata={"help": "Weight of the distillation terms against CE, in [0, 1] (paper 2.4)."}
    )
    student_hidden_layer: int = field(
        default=-1, metadata={"help": "Student layer for L_mhca/L_rel: -1 final norm, k >= 0 decoder layer k."}
    )
    teacher_hidden_layer: int = field(
        default=-1, metadata={"help": "Teacher layer for L_mhca/L_rel: -1 final norm, k >= 0 decoder layer k."}
    )
    kd_token_scope: str = field(
        default="all", metadata={"help": "Positions used by L_mhca/L_rel: 'all' tokens or 'response' tokens only."}
    )
    aligner_learning_rate: float = field(
        default=5e-4, metadata={"help": "Learning rate of the aligner/projector parameter group."}
    )
    projector_learning_rate: float | None = field(
        default=None,
        metadata={"help": "Learning rate of the student's own vision-language projector (None: learning_rate)."},
    )
    nonfinite_kd_action: str = field(
        default="error",
        metadata={
            "help": "On a NaN/inf loss term or gradient norm: 'error' (raise, naming step and term) or 'skip' the "
            "update (counted)."
        },
    )
    max_consecutive_skipped_steps: int = field(
        default=10,
        metadata={
            "help": "Under nonfinite_kd_action='skip': stop once more than this many updates in a row were skipped."
        },
    )
    teacher_max_length: int | None = field(
        default=None,
        metadata={"help": "Longest teacher view in tokens (None: the teacher's max_position_embeddings)."},
    )
    teacher_chat_template: str | None = field(
        default=None,
        metadata={"help": "Teacher conversation template name ('llava_v1', 'qwen_vl', 'qwen2_vl') or Jinja text."},
    )
    student_chat_template: str | None = field(
        default=None,
        metadata={"help": "Student conversation template name ('qwen_vl', 'qwen2_vl', 'llava_v1') or Jinja text."},
    )
    allow_partial_resume: bool = field(
        default=False,
        metadata={"help": "Resume from a checkpoint missing its optimizer/scheduler/aligner file, with fresh state."},
    )

    def __post_init__(self) -> None:
        # Our fields first: they do not depend on SFTConfig's resolution, and a typo in a distillation weight should
        # be what a user hears about, not a hardware check of TrainingArguments further down.
        self._check_ranges()
        super().__post_init__()
        # accelerate runs fp16 only on accelerators: on a CPU `fp16=True` would silently train in fp32. (bf16 on a CPU
        # without `use_cpu` is refused by TrainingArguments; fp16 gets no such check there.)
        if self.fp16 and self.device.type == "cpu":
            raise ValueError(
                "`fp16=True` needs a GPU (or another accelerator): on the CPU accelerate would silently train in fp32. "
                "Use `bf16=True` (with `use_cpu=True`) for mixed precision on a CPU, or `fp16=False`."
            )

    def _check_ranges(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"`alpha` must be in [0, 1], got {self.alpha}.")
        if self.nonfinite_kd_action == "skip":
            deepspeed = self.deepspeed is not None or os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"
            if deepspeed or self.fp16:
                where = "DeepSpeed (its engine steps its own optimizer)" if deepspeed else "fp16 loss scaling"
                raise ValueError(
                    f"`nonfinite_kd_action='skip'` cannot drop an update under {where}: use 'error'"
                    + ("." if deepspeed else ", or bf16.")
                )
        if self.projector_learning_rate is not None and self.projector_learning_rate <= 0:
            raise ValueError(f"`projector_learning_rate` must be > 0, got {self.projector_learning_rate}.")
        if not self.aligner_learning_rate > 0:
            raise ValueError(f"`aligner_learning_rate` must be > 0, got {self.aligner_learning_rate}.")
        if self.teacher_max_length is not None and self.teacher_max_length < 1:
            raise ValueError(f"`teacher_max_length` must be >= 1, got {self.teacher_max_length}.")
        if self.max_consecutive_skipped_steps < 1:
            raise ValueError(
                f"`max_consecutive_skipped_steps` must be >= 1, got {self.max_consecutive_skipped_steps} (to stop at the "
                "first non-finite update, use `nonfinite_kd_action='error'`)."
            )
        choices = {"kd_token_scope": KD_TOKEN_SCOPES, "nonfinite_kd_action": NONFINITE_ACTIONS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"`{name}` must be one of {allowed}, got {getattr(self, name)!r}.")
        # Every method's own range checks (its fields are set whichever method runs), then what the selected method
        # cannot run with; resolving the name here makes a typo in a recipe fail before any model loads.
        for config_class in METHOD_CONFIGS:
            config_class.check(self)
        get_method(self.kd_method).check_args(self)


def _method_parameters_doc() -> str:
    """The docstring entries of every method's own fields, one section per method, in TRL's format."""
    sections = [textwrap.indent(textwrap.dedent(cls.__doc__ or "").strip(), " " * 8) for cls in METHOD_CONFIGS]
    return "\n\n".join(sections)


EVLDistillConfig.__doc__ = EVLDistillConfig.__doc__.replace("        {method_parameters}", _method_parameters_doc())


def as_distill_config(args: Any, model: Any) -> EVLDistillConfig:
    """``args`` as an :class:`EVLDistillConfig`: ``None`` gives the defaults (output beside the student's name); an
    ``SFTConfig`` / ``TrainingArguments`` from an existing script keeps all its values (drop-in use) and the
    distillation fields take the paper's defaults."""
    if args is None:
        name = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "") or "student"
        return EVLDistillConfig(output_dir=f"{Path(str(name)).name}-EVL")
    if isinstance(args, EVLDistillConfig):
        return args
    if isinstance(args, TrainingArguments):
        # `to_dict` would mask every `*_token` field, so read the fields themselves.
        known = {f.name for f in dataclasses.fields(EVLDistillConfig) if f.init}
        values = {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.init and f.name in known}
        return EVLDistillConfig(**values)
    raise TypeError(f"`args` must be an EVLDistillConfig, SFTConfig or TrainingArguments, got {type(args)}.")
