"""Worker for tests/test_distributed.py: `torchrun --nproc_per_node N tests/distributed_worker.py OUT MODE BATCH
[TEACHER_CACHE_DIR]` (with a cache, each rank reads its own samples' teacher features and no teacher runs).

Trains the tiny EVL setup for a few steps on CPU (gloo) and writes, per rank, the logged losses and a
checksum of every aligner and student parameter, so the test can compare ranks and process counts.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

warnings.filterwarnings("ignore")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from evl_kd_trainer.testing import build_tiny_llava_next, build_tiny_qwen3_vl, make_tiny_vlm_dataset  # noqa: E402
from evl_kd_trainer.trainer import EVLDistillConfig, EVLDistillTrainer  # noqa: E402

ZERO3 = {
    "zero_optimization": {"stage": 3},
    "train_micro_batch_size_per_gpu": "auto",
    "train_batch_size": "auto",
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
    "zero_allow_untested_optimizer": True,
}
ZERO2 = {**ZERO3, "zero_optimization": {"stage": 2}}


def main() -> None:
    out, mode, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cache_dir = sys.argv[4] if len(sys.argv) > 4 else None
    student, student_processor = build_tiny_qwen3_vl(seed=0)
    teacher, teacher_processor = build_tiny_llava_next(seed=1)
    args = EVLDistillConfig(
        output_dir=os.path.join(out, "run"),
        max_steps=3,
        per_device_train_batch_size=batch,
        learning_rate=1e-3,
        aligner_learning_rate=1e-3,
        bf16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        seed=0,
        disable_tqdm=True,
        teacher_cache_dir=cache_dir,
        lr_scheduler_type="constant",
        deepspeed={"ddp": None, "ddp_label_smoothing": None, "zero2": ZERO2, "zero3": ZERO3}[mode],
        # label smoothing: SFTTrainer's grad forward then returns logits and no loss (a second forward feeds metrics)
        **({"label_smoothing_factor": 0.1, "loss_type": "nll"} if mode == "ddp_label_smoothing" else {}),
    )
    trainer = EVLDistillTrainer(
        student,
        teacher_model=teacher,
        args=args,
        train_dataset=make_tiny_vlm_dataset(n=12, seed=0),
        processing_class=student_processor,
        teacher_processing_class=teacher_processor,
    )
    trainer.train()
    rank = trainer.accelerator.process_index
    if trainer.is_deepspeed_enabled:
        import deepspeed

        params = list(trainer.kd_method.parameters())
        with deepspeed.zero.GatheredParameters(params, enabled=mode == "zero3"):
            aligner = {n: float(p.detach().double().sum()) for n, p in trainer.kd_method.named_parameters()}
    else:
        aligner = {n: float(p.detach().double().sum()) for n, p in trainer.kd_method.named_parameters()}
    logs = [e for e in trainer.state.log_history if "ce_loss" in e]
    result = {
        "rank": rank,
        "world": trainer.accelerator.num_processes,
        "logs": logs,
        "aligner": aligner,
        "backend": "deepspeed" if trainer.is_deepspeed_enabled else "fsdp" if trainer.is_fsdp_enabled else "ddp",
        "model_class": type(trainer.model_wrapped).__name__,
    }
    with open(os.path.join(out, f"rank{rank}.json"), "w") as handle:
        json.dump(result, handle)
    torch.distributed.barrier() if torch.distributed.is_initialized() else None


if __name__ == "__main__":
    main()
