"""``evl-kd convert-ptbxl ROOT OUT``: PTB-XL -> ECGInstruct JSON + ECG-Bench-style superclass test split."""

from __future__ import annotations

import argparse
import sys

from evl_kd_trainer.ecg.cli import add_conversion_arguments, add_render_arguments, report_conversion


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evl-kd convert-ptbxl",
        description="Render PTB-XL WFDB records and write train.json (folds 1-8), val.json (9), test.json (10) "
        "with diagnostic-superclass questions, and manifest.json (counts, skipped records per reason).",
    )
    parser.add_argument(
        "root", help="PTB-XL folder (ptbxl_database.csv, scp_statements.csv, records500/ or records100/)"
    )
    parser.add_argument("out_dir", help="output folder (created)")
    parser.add_argument("--sampling-rate", type=int, choices=[100, 500], default=500, help="record set to read")
    parser.add_argument("--splits", default="train,val,test", help="comma-separated among train,val,test")
    parser.add_argument("--min-likelihood", type=float, default=0.0, help="minimum scp_codes likelihood to count")
    add_conversion_arguments(parser)
    add_render_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    from evl_kd_trainer.ecg.ptbxl import convert_ptbxl

    try:
        report = convert_ptbxl(
            args.root,
            args.out_dir,
            sampling_rate=args.sampling_rate,
            splits=[s.strip() for s in args.splits.split(",") if s.strip()],
            layout=args.layout,
            dpi=args.dpi,
            size=args.size,
            augment_prob=args.augment_prob,
            seed=args.seed,
            question_types=args.question_types,
            min_likelihood=args.min_likelihood,
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
