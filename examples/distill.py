"""Stage 2, EVL-ECG distillation of PULSE-7B into Qwen3-VL-2B (paper Tables 3 and 4):

    accelerate launch examples/distill.py --recipe recipes/pulse_to_qwen.yaml

Any config field can be overridden on the command line, e.g. `--learning_rate 1e-4 --lambda_ot 0.3`.
Baselines: `--recipe recipes/baselines/uld.yaml` (or multilevel_ot, dskd, emkd, sft).
"""

import sys

from evl_kd_trainer.scripts.distill import main

if __name__ == "__main__":
    sys.exit(main())
