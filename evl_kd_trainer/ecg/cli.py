"""``evl-kd make-synthetic OUT``: write the synthetic ECGInstruct-style dataset (see :mod:`evl_kd_trainer.ecg.synthetic`).

Also home of the render options shared by the converter commands (``convert-ptbxl``, ``convert-code15``).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from evl_kd_trainer.ecg.layouts import LAYOUTS


def parse_size(text: str) -> tuple[int, int]:
    """``"224x64"`` -> ``(224, 64)``."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels, e.g. 224x64; got {text!r}") from error
    return width, height


def parse_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def add_render_arguments(parser: argparse.ArgumentParser, default_layout: str = "3x4") -> None:
    group = parser.add_argument_group("rendering")
    group.add_argument("--layout", default=default_layout, choices=[*LAYOUTS, "rhythm"], help="page layout")
    group.add_argument("--size", type=parse_size, default=None, help="picture size WIDTHxHEIGHT (overrides --dpi)")
    group.add_argument("--dpi", type=float, default=100.0, help="pixels per inch of paper (default 100)")
    group.add_argument("--augment-prob", type=float, default=0.0, help="chance a training picture is augmented")


def add_conversion_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("conversion")
    group.add_argument("--seed", type=int, default=0, help="seed of augmentations (and of the CODE-15%% split)")
    group.add_argument(
        "--question-types", type=parse_list, default=["closed", "mcq"], help="train/val questions: closed,mcq"
    )
    group.add_argument("--limit", type=int, default=None, help="convert only the first N records")
    group.add_argument("--skip-invalid", action="store_true", help="count bad records and go on instead of stopping")
    group.add_argument("--num-workers", type=int, default=0, help="worker processes (default 0: this process)")


def report_conversion(report: Any) -> int:
    """Print a :class:`~evl_kd_trainer.ecg.conversion.ConversionReport`; exit status 0."""
    print(report.summary())
    for reason, examples in sorted(report.first_errors.items()):
        print(f"  skipped {reason} x{report.skipped[reason]}, e.g. {examples[0]}")
    for name, path in report.files.items():
        print(f"  {name}: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evl-kd make-synthetic",
        description="Simulate 12-lead ECGs of visibly different rhythms, render them and write ECGInstruct JSON "
        "(train.json), an ECG-Bench-style multiple-choice test split (test.json) and manifest.json.",
    )
    parser.add_argument("out_dir", help="output folder (created)")
    parser.add_argument("--n-train", type=int, default=400, help="training pictures (default 400)")
    parser.add_argument("--n-test", type=int, default=100, help="test pictures (default 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--classes", type=parse_list, default=None, help="comma-separated among SB,NSR,ST,AF,AFL")
    parser.add_argument(
        "--question-types", type=parse_list, default=["closed", "mcq"], help="training questions: closed,mcq"
    )
    parser.add_argument("--shuffle-options", action="store_true", help="shuffle multiple-choice options per record")
    parser.add_argument("--augment-test", action="store_true", help="augment test pictures too")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per record (default 10)")
    parser.add_argument("--sampling-rate", type=float, default=250.0, help="simulation rate in Hz (default 250)")
    add_render_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    from evl_kd_trainer.ecg.synthetic import make_synthetic_dataset

    try:
        paths = make_synthetic_dataset(
            args.out_dir,
            n_train=args.n_train,
            n_test=args.n_test,
            seed=args.seed,
            classes=args.classes,
            layout=args.layout,
            image_size=args.size,
            dpi=args.dpi,
            augment_prob=args.augment_prob,
            question_types=args.question_types,
            shuffle_options=args.shuffle_options,
            augment_test=args.augment_test,
            duration=args.duration,
            sampling_rate=args.sampling_rate,
        )
    except ValueError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    with open(paths["manifest"], encoding="utf-8") as handle:
        manifest = json.load(handle)
    counts = manifest["counts"]
    print(
        f"synthetic ECG dataset in {args.out_dir}: train {counts['train']['images']} pictures / "
        f"{counts['train']['records']} records, test {counts['test']['images']} records, "
        f"classes {[c['code'] for c in manifest['classes']]}, written in {manifest['seconds']} s"
    )
    for name, path in paths.items():
        print(f"  {name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
