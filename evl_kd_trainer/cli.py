"""`evl-kd` console script: one entry point, one subcommand per tool.

Each subcommand lives in the module that owns the work and exposes ``main(argv) -> int``; this file
only dispatches, importing lazily so that ``evl-kd --help`` does not import torch.
"""

from __future__ import annotations

import importlib
import inspect
import sys

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "sft": ("evl_kd_trainer.scripts.sft", "stage 1: supervised fine-tuning from a recipe"),
    "distill": ("evl_kd_trainer.scripts.distill", "stage 2: EVL-ECG (or baseline) distillation from a recipe"),
    "cache-teacher": ("evl_kd_trainer.scripts.cache_teacher", "run a recipe's teacher once, caching its features"),
    "evaluate": ("evl_kd_trainer.eval.cli", "score a model on ECG-Bench-style splits"),
    "compare": ("evl_kd_trainer.scripts.compare", "methods x seeds: distil, score, paired-bootstrap table and plot"),
    "convert-llava": ("evl_kd_trainer.convert.cli", "convert an original-LLaVA checkpoint (e.g. PULSE-7B)"),
    "make-synthetic": ("evl_kd_trainer.ecg.cli", "write a synthetic ECGInstruct-style dataset"),
    "convert-ptbxl": ("evl_kd_trainer.ecg.cli_ptbxl", "convert a PTB-XL archive to ECGInstruct records"),
    "convert-code15": ("evl_kd_trainer.ecg.cli_code15", "convert a CODE-15% archive to ECGInstruct records"),
}


# Commands whose options are config fields (slow to import; `compare` lists the registered KD methods, which
# imports torch): their plain `--help` is served from a cache.
RECIPE_COMMANDS = ("sft", "distill", "cache-teacher", "evaluate", "compare")


def _usage() -> str:
    lines = ["usage: evl-kd <command> [options]    (evl-kd <command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<16}{help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    lines += ["", "options:", f"  {'-h, --help':<16}this list", f"  {'--version':<16}the package version"]
    return "\n".join(lines)


def _cached_help(command: str) -> str:
    from evl_kd_trainer.scripts.help_cache import help_text

    prog = f"evl-kd {command}"
    return help_text(prog, lambda: importlib.import_module(SUBCOMMANDS[command][0]).main(["--help"], prog=prog))


def warm_help_cache() -> None:
    """Build the cached ``--help`` of every recipe command in one process (TRL imported once): `make install` runs
    it, so that a user's first ``evl-kd distill --help`` is as fast as the next."""
    for command in RECIPE_COMMANDS:
        _cached_help(command)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    if argv[0] in {"-V", "--version"}:
        from evl_kd_trainer import __version__

        print(f"evl-kd (evl_kd_trainer) {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in SUBCOMMANDS:
        print(f"evl-kd: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    prog = f"evl-kd {command}"
    if command in RECIPE_COMMANDS and rest in (["-h"], ["--help"]):
        print(_cached_help(command), end="")
        return 0
    module = importlib.import_module(SUBCOMMANDS[command][0])
    # The usage line names the subcommand (`evl-kd distill`), not the console script alone.
    kwargs = {"prog": prog} if "prog" in inspect.signature(module.main).parameters else {}
    return int(module.main(rest, **kwargs) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
