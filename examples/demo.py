"""The embedded default: `python examples/demo.py --output_dir demo_output` (what `make demo` runs).

It grows with the project; at this stage it exercises the loss registry on CPU.
"""

import argparse

from evl_kd_trainer import __version__
from evl_kd_trainer.losses import list_losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output_dir", default="demo_output")
    args = parser.parse_args()
    print(f"evl_kd_trainer {__version__}: registered losses: {', '.join(list_losses()) or '(none yet)'}")
    print(f"output directory: {args.output_dir}")


if __name__ == "__main__":
    main()
