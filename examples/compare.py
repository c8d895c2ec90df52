"""Compare distillation methods over seeds, with paired bootstrap intervals against the SFT control:

    python examples/compare.py --recipe recipes/demo/distill.yaml \
        --methods sft evl ot_only=evl,lambda_mhca=0,lambda_rel=0 ot_mhca=evl,lambda_rel=0 uld multilevel_ot dskd emkd \
        --seeds 3 --output_dir demo_output/compare

(after `python examples/demo.py`, which writes the SFT'd teacher and student the demo recipes start from). Every
method trains from the recipe's `model_name_or_path` with `--seed 0, 1, 2` and is scored on the held-out split of
`evaluate.yaml` beside the recipe (`--eval_recipe` for another); `comparison.md`, `comparison.png` and
`comparison.json` land in `--output_dir`. A rerun keeps the finished runs. Same as `evl-kd compare`.
"""

import sys

from evl_kd_trainer.scripts.compare import main

if __name__ == "__main__":
    sys.exit(main())
