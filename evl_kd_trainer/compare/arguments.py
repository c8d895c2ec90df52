"""`CompareArguments`: what `evl-kd compare` trains, scores and summarises (its own options; the distillation
settings come from the distill recipe and the overrides)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CompareArguments:
    """A seeded comparison of distillation methods.

    Parameters:
        recipe (`str`):
            The distill recipe every run starts from (`recipes/demo/distill.yaml`): the starting student
            (`model_name_or_path`), the teacher, the data and the schedule, the same for every method and seed.
        methods (`list[str]`):
            The compared methods, each `NAME` (a registered `kd_method`: `sft`, `evl`, `uld`, `multilevel_ot`,
            `dskd`, `emkd`) or `NAME=KD_METHOD[,KEY=VALUE...]`, a variant with `EVLDistillConfig` overrides
            (`ot_only=evl,lambda_mhca=0,lambda_rel=0`). Values may not contain commas.
        eval_recipe (`str`, *optional*):
            The `evl-kd evaluate` recipe naming the held-out split(s) (`splits`, `data_files`, `image_root`, batch
            size, budget); its `model_name_or_path`, `model_names` and `output_dir` are replaced per run. Default:
            `evaluate.yaml` in the distill recipe's folder.
        eval_overrides (`list[str]`, *optional*):
            `KEY=VALUE` overrides of the evaluation recipe (`max_samples=50`); a list field takes comma-separated
            values (`data_files=a.json,b.json`).
        output_dir (`str`, *optional*, defaults to `"compare_output"`):
            Where the runs (`runs/<method>/seed<s>/`) and `comparison.{md,png,json}` are written. A rerun with
            the same folder keeps every finished run.
        seeds (`int`, *optional*, defaults to `3`):
            Number of seeds: `0 .. seeds-1` (`--seed` of every run). Ignored when `seed_list` is given.
        seed_list (`list[int]`, *optional*):
            Explicit seeds (`--seed_list 11 12 13`).
        control (`str`, *optional*, defaults to `"sft"`):
            The method (by name) every other one is compared against, run by run with the same seed.
        bootstrap (`int`, *optional*, defaults to `10000`):
            Paired bootstrap replicates (questions and seeds resampled with replacement).
        confidence (`float`, *optional*, defaults to `0.95`):
            Level of the percentile intervals, in (0, 1).
        bootstrap_seed (`int`, *optional*, defaults to `0`):
            Seed of the bootstrap draws (the same numbers on a rerun).
        keep_models (`bool`, *optional*, defaults to `True`):
            Keep each run's trained weights. `False` deletes them once the run is scored (its logs and per-question
            results stay), for long comparisons of large students.
    """

    recipe: str | None = field(default=None, metadata={"help": "Distill recipe shared by every run."})
    methods: list[str] | None = field(
        default=None, metadata={"help": "Methods: NAME or NAME=KD_METHOD[,KEY=VALUE...] (see the list below)."}
    )
    eval_recipe: str | None = field(
        default=None, metadata={"help": "Evaluate recipe (held-out splits); default: evaluate.yaml beside --recipe."}
    )
    eval_overrides: list[str] | None = field(
        default=None, metadata={"help": "KEY=VALUE overrides of the evaluate recipe (lists comma-separated)."}
    )
    output_dir: str = field(default="compare_output", metadata={"help": "Runs and comparison.{md,png,json}."})
    seeds: int = field(default=3, metadata={"help": "Seeds 0..N-1 (ignored with --seed_list)."})
    seed_list: list[int] | None = field(default=None, metadata={"help": "Explicit seeds."})
    control: str = field(default="sft", metadata={"help": "Method name the others are compared against."})
    bootstrap: int = field(default=10000, metadata={"help": "Paired bootstrap replicates."})
    confidence: float = field(default=0.95, metadata={"help": "Interval level."})
    bootstrap_seed: int = field(default=0, metadata={"help": "Seed of the bootstrap draws."})
    keep_models: bool = field(default=True, metadata={"help": "Keep each run's weights after scoring."})

    def __post_init__(self) -> None:
        if not self.recipe:
            raise ValueError("`recipe` is required: the distill recipe every run starts from (--recipe PATH).")
        if not self.methods:
            raise ValueError("`methods` is required: two or more methods, the control among them (--methods ...).")
        if self.seed_list is not None:
            if not self.seed_list:
                raise ValueError("`seed_list` is empty.")
            if len(set(self.seed_list)) != len(self.seed_list):
                raise ValueError(f"`seed_list` repeats a seed: {self.seed_list}.")
        elif self.seeds < 1:
            raise ValueError(f"`seeds` must be >= 1, got {self.seeds}.")
        if self.bootstrap < 1:
            raise ValueError(f"`bootstrap` must be >= 1, got {self.bootstrap}.")
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"`confidence` must lie in (0, 1), got {self.confidence}.")

    def seed_values(self) -> list[int]:
        """The seeds of the runs, in run order."""
        return list(self.seed_list) if self.seed_list is not None else list(range(self.seeds))
