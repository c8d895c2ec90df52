"""Worker for the distributed test of tests/test_ecgbench_during_training.py:
`torchrun --nproc_per_node N tests/ecgbench_ddp_worker.py OUT SPLIT_FILE MODE`.

Trains the tiny student (plain SFT) for two steps under DDP or DeepSpeed ZeRO-3 on CPU (gloo), scoring the
ECG-Bench split at step 2 (3 questions, one per batch), and writes each rank's logged ECG-Bench metrics.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

warnings.filterwarnings("ignore")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from evl_kd_trainer.testing import build_tiny_qwen3_vl  # noqa: E402
from evl_kd_trainer.trainer import EVLDistillConfig, EVLDistillTrainer  # noqa: E402
from tests.distributed_worker import ZERO3  # noqa: E402
from tests.test_ecgbench_during_training import COMMON, letter_dataset  # noqa: E402


def main() -> None:
    out, split_file, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    student, processor = build_tiny_qwen3_vl(seed=0)
    args = EVLDistillConfig(
        output_dir=os.path.join(out, "run"),
        kd_method="sft",
        max_steps=2,
        learning_rate=5e-4,
        save_strategy="steps",
        save_steps=2,
        ecgbench_eval_splits=[split_file],
        ecgbench_eval_steps=2,
        # 3 questions one at a time on 2 ranks: rank 1's share is padded so that both call `generate` twice
        ecgbench_eval_max_samples=3,
        # the checkpoint must hold whole weights for `evl-kd evaluate` (ZeRO-3 saves shards otherwise)
        deepspeed={**ZERO3, "zero_optimization": {"stage": 3, "stage3_gather_16bit_weights_on_model_save": True}}
        if mode == "zero3"
        else None,
        **{**COMMON, "per_device_train_batch_size": 1, "ecgbench_eval_batch_size": 1},
    )
    trainer = EVLDistillTrainer(student, args=args, train_dataset=letter_dataset(), processing_class=processor)
    trainer.train()
    entries = [entry for entry in trainer.state.log_history if "eval_synthetic_accuracy" in entry]
    rank = trainer.accelerator.process_index
    result = {"rank": rank, "world": trainer.accelerator.num_processes, "entries": entries}
    with open(os.path.join(out, f"rank{rank}.json"), "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main()
