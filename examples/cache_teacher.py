"""Cache PULSE-7B's features once for a distillation recipe, then train from the cache (no teacher in memory):

    accelerate launch examples/cache_teacher.py --recipe recipes/pulse_to_qwen.yaml --output cache/pulse-evl

Options beyond the recipe: `--compression bf16|fp32|fp8|pca:R`, `--logits_topk K` (ULD/MultiLevelOT),
`--visual_centroids C`, `--batch_size`, `--shard_size`, `--overwrite`. A rerun on the same folder resumes.
"""

import sys

from evl_kd_trainer.scripts.cache_teacher import main

if __name__ == "__main__":
    sys.exit(main())
