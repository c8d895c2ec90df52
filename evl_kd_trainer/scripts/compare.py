r"""Compare distillation methods over seeds: train every method from the same starting student with each seed
(`evl-kd distill`), score every run on the held-out split(s) (`evl-kd evaluate`), and summarise:

    evl-kd compare --recipe recipes/demo/distill.yaml --methods sft evl uld --seeds 3 --output_dir compare_output

Writes `comparison.md` (per split and metric: each method's mean over seeds with a 95 % interval, and its paired
difference against the control with its interval and the share of bootstrap replicates above 0),
`comparison.png` and `comparison.json` (every number, the command and its wall time) to `output_dir`, beside
the runs (`runs/<method>/seed<s>/`). A rerun keeps every finished run and redoes any that was interrupted.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evl_kd_trainer.compare.arguments import CompareArguments
from evl_kd_trainer.compare.methods import SPEC_SYNTAX, MethodSpec
from evl_kd_trainer.scripts.cli_errors import UserError
from evl_kd_trainer.scripts.compare_runs import Run

PROG = "evl-kd compare"
COMPARISON_FILES = ("comparison.md", "comparison.png", "comparison.json")
# Set by the comparison for each run: not overridable.
RESERVED_DISTILL = {
    "kd_method": "each method sets it (--methods NAME=KD_METHOD)",
    "seed": "each run sets it (--seeds / --seed_list)",
    "output_dir": "each run has its own folder under the comparison's --output_dir",
    "recipe": "the distill recipe is --recipe",
}
RESERVED_EVAL = {
    "model_name_or_path": "each run's trained student is scored",
    "model_names": "each run names its own row",
    "output_dir": "each run is scored in its own folder",
    "recipe": "the evaluate recipe is --eval_recipe",
}


def _epilog() -> str:
    import textwrap

    from evl_kd_trainer.methods import METHOD_REGISTRY, load_builtin_methods

    load_builtin_methods()
    methods = (
        f"methods: {SPEC_SYNTAX}. NAME alone is the registered kd_method of that name (known: "
        f"{', '.join(METHOD_REGISTRY.names())}); `sft` is the control, the same steps with cross-entropy only. "
        "KEY=VALUE pairs are EVLDistillConfig fields for that method alone (no commas in values), e.g. the paper's "
        "Table 6 ablations and two baselines:"
    )
    overrides = (
        "overrides for every run: any other KEY=VALUE or --KEY VALUE is an `evl-kd distill` option passed to every "
        "run (max_steps=20, --learning_rate 1e-4); put KEY=VALUE pairs before --methods or after another option, "
        "since --methods takes the words that follow it. Every method and seed starts from the recipe's "
        "model_name_or_path; kd_method, seed and output_dir are set per run."
    )
    example = "  --methods sft evl ot_only=evl,lambda_mhca=0,lambda_rel=0 ot_mhca=evl,lambda_rel=0 uld dskd"
    return f"{textwrap.fill(methods, 116)}\n{example}\n\n{textwrap.fill(overrides, 116)}"


class _Parser:
    """``CompareArguments`` from the command line; the leftover tokens are the overrides for every run."""

    def __init__(self, prog: str) -> None:
        import argparse

        from transformers import HfArgumentParser

        from evl_kd_trainer.scripts.recipe import RecipeError

        class Parser(HfArgumentParser):
            def error(self, message: str):  # one line naming the flag, not the whole usage
                raise RecipeError(message)

        class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
            pass

        self.parser = Parser(
            (CompareArguments,), prog=prog, description=__doc__, epilog=_epilog(), formatter_class=Formatter,
            allow_abbrev=False,  # `--seed` must not pass for `--seed_list`: it is a run override, and refused
        )  # fmt: skip
        self.parser.usage = f"{prog} --recipe RECIPE --methods METHOD [METHOD ...] [--seeds N] [KEY=VALUE ...]"
        for action in self.parser._actions:  # HfArgumentParser gives `--no_X` the help of `--X`
            if isinstance(action, argparse._StoreFalseAction):
                action.help = f"Turn off --{action.dest}."

    def parse(self, argv: Sequence[str]) -> tuple[CompareArguments, list[str]]:
        from evl_kd_trainer.scripts.recipe import RecipeError

        try:
            args, remaining = self.parser.parse_args_into_dataclasses(args=list(argv), return_remaining_strings=True)
        except RecipeError:
            raise
        except ValueError as err:  # CompareArguments.__post_init__
            raise RecipeError(f"command line: {err}") from err
        return args, list(remaining)


@dataclass
class Plan:
    """Everything checked before the first run trains."""

    args: CompareArguments
    methods: list[MethodSpec]
    seeds: list[int]
    control: int
    splits: list[str]
    recipe: Path
    eval_recipe: Path
    runs: list[Run]
    markers: dict[str, dict[str, Any] | None] = field(default_factory=dict)


def build_plan(args: CompareArguments, tokens: Sequence[str]) -> Plan:
    """Check the recipes, methods, overrides and every run's command line; read the finished runs' markers."""
    from trl import ModelConfig

    from evl_kd_trainer.compare.methods import parse_methods
    from evl_kd_trainer.compare.overrides import field_types, split_overrides, to_argv
    from evl_kd_trainer.eval.arguments import EvalArguments
    from evl_kd_trainer.methods import METHOD_REGISTRY, load_builtin_methods
    from evl_kd_trainer.scripts.args import DataArguments
    from evl_kd_trainer.scripts.compare_runs import file_digest, make_run, read_marker
    from evl_kd_trainer.trainer.config import EVLDistillConfig

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError(
            "evl-kd compare runs its runs one after another in one process: start it with python or evl-kd, not "
            "accelerate launch / torchrun"
        )
    recipe = Path(args.recipe)
    if not recipe.is_file():
        raise FileNotFoundError(f"`recipe`: no such file: {recipe}")
    eval_recipe = Path(args.eval_recipe) if args.eval_recipe else recipe.parent / "evaluate.yaml"
    if not eval_recipe.is_file():
        where = "`eval_recipe`" if args.eval_recipe else f"no --eval_recipe given and no evaluate.yaml beside {recipe}"
        raise FileNotFoundError(f"{where}: no such file: {eval_recipe}")

    load_builtin_methods()
    methods = parse_methods(args.methods, METHOD_REGISTRY.names(), field_types((EVLDistillConfig,)))
    names = [method.name for method in methods]
    if args.control not in names:
        raise UserError(f"`control`: {args.control!r} is not among the methods ({', '.join(names)})")
    if len(methods) < 2:
        raise UserError(f"`methods`: a comparison needs the control and at least one other method, got {names}")
    distill_types = (ModelConfig, DataArguments, EVLDistillConfig)
    overrides = split_overrides(
        tokens, field_types(distill_types), "EVLDistillConfig, ModelConfig or DataArguments (`evl-kd distill --help`)",
        RESERVED_DISTILL,
    )  # fmt: skip
    eval_overrides = split_overrides(
        args.eval_overrides or [], field_types((EvalArguments,)), "EvalArguments (`evl-kd evaluate --help`)",
        RESERVED_EVAL,
    )  # fmt: skip
    distill_base = ["--recipe", str(recipe), *to_argv(overrides)]
    eval_base = ["--recipe", str(eval_recipe), *to_argv(eval_overrides)]
    output_dir = Path(args.output_dir)
    student = _check_distill_argv(methods, distill_base, output_dir, distill_types)
    splits = _check_evaluation(eval_base, student, output_dir)
    settings = {
        "recipe_sha256": file_digest(recipe),
        "eval_recipe_sha256": file_digest(eval_recipe),
        "overrides": to_argv(overrides),
        "eval_overrides": to_argv(eval_overrides),
    }
    seeds = args.seed_values()
    runs = [make_run(m, s, output_dir, distill_base, eval_base, settings) for s in seeds for m in methods]
    markers = {run.key: read_marker(run) for run in runs}  # other settings in a finished run: an error, here
    return Plan(args, methods, seeds, names.index(args.control), splits, recipe, eval_recipe, runs, markers)


def _check_distill_argv(
    methods: Sequence[MethodSpec], base: list[str], output_dir: Path, distill_types: tuple[type, ...]
) -> str:
    """Parse every method's command line as `evl-kd distill` will (types, ranges, paths); the starting student."""
    from evl_kd_trainer.scripts import distill
    from evl_kd_trainer.scripts.cli_errors import one_line
    from evl_kd_trainer.scripts.recipe import parse_recipe_args

    students = set()
    for method in methods:
        argv = [*base, *method.argv(), "--kd_method", method.kd_method, "--seed", "0"]
        argv += ["--output_dir", str(output_dir / "runs" / method.name / "seed0" / "model")]
        try:
            model_args, _, _ = parse_recipe_args(distill_types, argv, prog=distill.PROG, precheck=distill.precheck)
        except (ValueError, TypeError, KeyError, OSError) as err:
            raise UserError(f"method {method.name!r}: {one_line(err)}") from err
        students.add(model_args.model_name_or_path)
    (student,) = students  # a method's overrides are EVLDistillConfig fields: the student is the recipe's
    return student


def _check_evaluation(base: list[str], student: str, output_dir: Path) -> list[str]:
    """Parse the evaluation's command line and read its splits (every gold answer parsed) before any training."""
    from evl_kd_trainer.compare.stats import STATISTICS
    from evl_kd_trainer.eval.arguments import EvalArguments
    from evl_kd_trainer.eval.runner import load_splits
    from evl_kd_trainer.eval.splits import MULTILABEL, get_split
    from evl_kd_trainer.scripts.evaluate import PROG as EVAL_PROG
    from evl_kd_trainer.scripts.evaluate import check_paths
    from evl_kd_trainer.scripts.recipe import parse_recipe_args

    argv = [*base, "--model_name_or_path", student, "--model_names", "check", "--output_dir", str(output_dir)]
    (eval_args,) = parse_recipe_args((EvalArguments,), argv, prog=EVAL_PROG)
    check_paths(eval_args)
    load_splits(eval_args)
    for split in eval_args.splits:
        spec = get_split(split)
        if eval_args.reference_compat and spec.task == MULTILABEL:
            raise UserError(
                f"evaluation: {split} under `reference_compat` scores a label space that changes with the questions "
                "drawn; compare methods with our scoring (reference_compat false)"
            )
        missing = [metric for metric in spec.metrics if metric not in STATISTICS]
        if missing:  # pragma: no cover - every split's metrics have a statistic
            raise UserError(f"evaluation: no bootstrap statistic for {split}'s {', '.join(missing)}")
    return list(eval_args.splits)


def execute_plan(plan: Plan) -> tuple[list[str], list[str]]:
    """Train and score every unfinished run; returns the keys run now and those kept."""
    from evl_kd_trainer.scripts.compare_runs import execute

    executed, reused = [], []
    todo = [run for run in plan.runs if plan.markers[run.key] is None]
    for run in plan.runs:
        if plan.markers[run.key] is not None:
            reused.append(run.key)
            continue
        executed.append(run.key)
        print(f"\n=== compare: {run.key} ({len(executed)}/{len(todo)} to run, kd_method {run.method.kd_method}) ===")
        plan.markers[run.key] = execute(run, keep_models=plan.args.keep_models)
    return executed, reused


def summarise(plan: Plan) -> list[dict[str, Any]]:
    """The statistics of every split and metric, from the runs' per-question results."""
    import numpy as np

    from evl_kd_trainer.compare.collect import read_rows, split_features
    from evl_kd_trainer.compare.report import metric_entry
    from evl_kd_trainer.compare.stats import STATISTICS, draw_resamples, paired_bootstrap

    by_key = {run.key: run for run in plan.runs}
    rng = np.random.default_rng(plan.args.bootstrap_seed)
    entries = []
    for split in plan.splits:
        rows = [
            [
                read_rows(
                    by_key[f"{method.name}/seed{seed}"].folder
                    / plan.markers[f"{method.name}/seed{seed}"]["predictions"][split]
                )
                for seed in plan.seeds
            ]
            for method in plan.methods
        ]
        features = split_features(split, rows)
        resamples = draw_resamples(len(features.question_ids), len(plan.seeds), plan.args.bootstrap, rng)
        for metric in features.metrics:
            stats = paired_bootstrap(
                features.features[metric], STATISTICS[metric], plan.control, resamples, plan.args.confidence
            )
            entries.append(metric_entry(features, metric, stats, plan.methods))
    return entries


def run(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """The script body; input errors raise (``main`` prints them as one line)."""
    from evl_kd_trainer.scripts.cli_errors import user_input

    started = time.perf_counter()
    argv = list(sys.argv[1:] if argv is None else argv)
    with user_input():
        args, tokens = _Parser(prog).parse(argv)
        plan = build_plan(args, tokens)
    executed, reused = execute_plan(plan)
    results = summarise(plan)

    from evl_kd_trainer.compare.report import markdown, plot
    from evl_kd_trainer.eval.report import write_json

    output_dir = Path(args.output_dir)
    payload = {
        "command": f"{prog} {shlex.join(argv)}",
        "argv": argv,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_seconds": round(time.perf_counter() - started, 3),
        "recipe": str(plan.recipe),
        "eval_recipe": str(plan.eval_recipe),
        "seeds": plan.seeds,
        "control": args.control,
        "bootstrap": args.bootstrap,
        "confidence": args.confidence,
        "bootstrap_seed": args.bootstrap_seed,
        "methods": [{"name": m.name, "kd_method": m.kd_method, "overrides": dict(m.overrides)} for m in plan.methods],
        "runs_executed": len(executed),
        "runs_reused": len(reused),
        "run_seconds": round(sum(m["train_seconds"] + m["eval_seconds"] for m in plan.markers.values()), 3),
        "runs": [
            {
                "key": run.key,
                "method": run.method.name,
                "seed": run.seed,
                "folder": str(run.folder.relative_to(output_dir)),
                "executed_now": run.key in executed,
                "train_seconds": plan.markers[run.key]["train_seconds"],
                "eval_seconds": plan.markers[run.key]["eval_seconds"],
                "finished_at": plan.markers[run.key]["finished_at"],
            }
            for run in plan.runs
        ],
        "results": results,
    }
    md, png, js = (output_dir / name for name in COMPARISON_FILES)
    write_json(js, payload)
    md.write_text(markdown(payload), encoding="utf-8")
    plot(payload, png)
    print(md.read_text(encoding="utf-8"))
    print(f"Comparison: {md.resolve()}, {png.name}, {js.name} ({len(executed)} run(s) trained now, {len(reused)} kept)")
    return 0


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    from evl_kd_trainer.scripts.cli_errors import run_cli

    return run_cli(lambda args: run(args, prog), argv, prog)


if __name__ == "__main__":
    sys.exit(main())
