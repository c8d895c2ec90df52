r"""Score one or several VLMs on ECG-Bench-style splits (the paper's Table 1), from a recipe or the command line.

    evl-kd evaluate --model_name_or_path checkpoints/evl-ecg-2b checkpoints/pulse-7b-hf \
        --splits ptb-xl-super csn --data_files data/ECGBench/ptb-test.json data/ECGBench/csn-test-no-cot.json \
        --image_root data/ECGBench/images --output_dir eval_results

Any field of `EvalArguments` can be set in a YAML recipe (`--recipe PATH`) and overridden on the command
line. Writes `results.json`, `results.md` (Table 1 layout), `per_class.png` and
`predictions/<model>/<split>.jsonl` to `output_dir`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from evl_kd_trainer.eval.arguments import DTYPES, IMAGE_POLICIES, EvalArguments

__all__ = ["DTYPES", "IMAGE_POLICIES", "EvalArguments", "check_paths", "main", "run"]


def check_paths(args: EvalArguments) -> None:
    """Every model folder, data file and the image root exist (before anything loads)."""
    from evl_kd_trainer.scripts.common import check_model_path

    for path in args.model_name_or_path:
        check_model_path(path, "model_name_or_path")
    for split, path in zip(args.splits, args.data_files):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"`data_files`: no such file for split {split!r}: {path}")
    if args.image_root is not None and not os.path.isdir(args.image_root):
        raise FileNotFoundError(f"`image_root`: no such folder: {args.image_root}")


PROG = "evl-kd evaluate"


def run(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    """The script body; input errors raise (``main`` prints them as one line)."""
    from evl_kd_trainer.scripts.cli_errors import user_input
    from evl_kd_trainer.scripts.recipe import parse_recipe_args

    with user_input():
        (args,) = parse_recipe_args((EvalArguments,), argv, description=__doc__, prog=prog)
        check_paths(args)
    from evl_kd_trainer.eval.runner import run_evaluation

    run_evaluation(args)
    return 0


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    from evl_kd_trainer.scripts.cli_errors import run_cli

    return run_cli(lambda args: run(args, prog), argv, prog)


if __name__ == "__main__":
    sys.exit(main())
