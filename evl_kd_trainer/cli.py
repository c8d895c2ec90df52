"""`evl-kd` console script: one entry point, one subcommand per tool.

Each subcommand lives in the module that owns the work and exposes ``main(argv) -> int``; this file
only dispatches, importing lazily so that ``evl-kd --help`` does not import torch.
"""

from __future__ import annotations

import importlib
import sys

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "sft": ("evl_kd_trainer.scripts.sft", "stage 1: supervised fine-tuning from a recipe"),
    "distill": ("evl_kd_trainer.scripts.distill", "stage 2: EVL-ECG (or baseline) distillation from a recipe"),
    "evaluate": ("evl_kd_trainer.eval.cli", "score a model on ECG-Bench-style splits"),
    "convert-llava": ("evl_kd_trainer.convert.cli", "convert an original-LLaVA checkpoint (e.g. PULSE-7B)"),
    "make-synthetic": ("evl_kd_trainer.ecg.cli", "write a synthetic ECGInstruct-style dataset"),
    "convert-ptbxl": ("evl_kd_trainer.ecg.cli_ptbxl", "convert a PTB-XL archive to ECGInstruct records"),
    "convert-code15": ("evl_kd_trainer.ecg.cli_code15", "convert a CODE-15% archive to ECGInstruct records"),
}


def _usage() -> str:
    lines = ["usage: evl-kd <command> [options]", "", "commands:"]
    lines += [f"  {name:<16}{help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in SUBCOMMANDS:
        print(f"evl-kd: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[command][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
