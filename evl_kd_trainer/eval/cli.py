"""``evl-kd evaluate``: the recipe-driven script :mod:`evl_kd_trainer.scripts.evaluate`."""

from __future__ import annotations

from collections.abc import Sequence


def main(argv: Sequence[str] | None = None, prog: str = "evl-kd evaluate") -> int:
    from evl_kd_trainer.scripts.evaluate import main as evaluate_main

    return evaluate_main(argv, prog=prog)
