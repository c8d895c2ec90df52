"""``evl-kd convert-code15 ROOT OUT``: CODE-15% -> ECGInstruct JSON + ECG-Bench-style test split."""

from __future__ import annotations

import argparse
import sys

from evl_kd_trainer.ecg.cli import add_conversion_arguments, add_render_arguments, report_conversion


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evl-kd convert-code15",
        description="Render CODE-15%% tracings (exams_part*.hdf5) and write train.json / test.json (and val.json) "
        "with the six CODE-15%% labels (or NORM / ABNORMAL), and manifest.json (counts, skipped exams per reason).",
    )
    parser.add_argument("root", help="folder holding exams.csv and exams_part*.hdf5")
    parser.add_argument("out_dir", help="output folder (created)")
    parser.add_argument("--test-fraction", type=float, default=0.1, help="share of patients in test (default 0.1)")
    parser.add_argument("--val-fraction", type=float, default=0.0, help="share of patients in val (default 0)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplier from file values to mV (default 1)")
    add_conversion_arguments(parser)
    add_render_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    from evl_kd_trainer.ecg.code15 import convert_code15

    try:
        report = convert_code15(
            args.root,
            args.out_dir,
            test_fraction=args.test_fraction,
            val_fraction=args.val_fraction,
            layout=args.layout,
            dpi=args.dpi,
            size=args.size,
            augment_prob=args.augment_prob,
            seed=args.seed,
            scale=args.scale,
            question_types=args.question_types,
            limit=args.limit,
            skip_invalid=args.skip_invalid,
            num_workers=args.num_workers,
        )
    except (ValueError, FileNotFoundError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    return report_conversion(report)


if __name__ == "__main__":
    raise SystemExit(main())
