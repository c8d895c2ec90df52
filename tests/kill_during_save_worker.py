"""Worker for tests/test_trainer_resume.py: `python tests/kill_during_save_worker.py ROOT`.

Trains the tiny EVL setup of tests/test_trainer.py (output in ROOT/out, a checkpoint every 2 steps) and SIGKILLs
itself in the middle of saving checkpoint 4: after the model weights were written, before the optimizer. Nothing
in this process gets a chance to clean up, as with an out-of-memory kill or a preempted node.
"""

from __future__ import annotations

import os
import signal
import sys
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from evl_kd_trainer.testing import build_tiny_llava_next, build_tiny_qwen3_vl, make_tiny_vlm_dataset  # noqa: E402
from evl_kd_trainer.trainer import EVLDistillTrainer  # noqa: E402
from tests.test_trainer import make_args  # noqa: E402

KILL_AT_STEP = 4


class KilledDuringSave(EVLDistillTrainer):
    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        if self.state.global_step == KILL_AT_STEP:
            os.kill(os.getpid(), signal.SIGKILL)
        super()._save_optimizer_and_scheduler(output_dir)


def main() -> None:
    root = Path(sys.argv[1])
    student, teacher = build_tiny_qwen3_vl(seed=0), build_tiny_llava_next(seed=1)
    trainer = KilledDuringSave(
        student[0],
        teacher_model=teacher[0],
        args=make_args(root, max_steps=4, save_strategy="steps", save_steps=2),
        train_dataset=make_tiny_vlm_dataset(n=8, seed=0),
        processing_class=student[1],
        teacher_processing_class=teacher[1],
    )
    trainer.train()


if __name__ == "__main__":
    main()
