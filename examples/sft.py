"""Stage 1, supervised fine-tuning of the student (paper Table 2):

    accelerate launch examples/sft.py --recipe recipes/sft_qwen3vl_2b.yaml

Any config field can be overridden on the command line, e.g. `--learning_rate 1e-4`.
"""

import sys

from evl_kd_trainer.scripts.sft import main

if __name__ == "__main__":
    sys.exit(main())
