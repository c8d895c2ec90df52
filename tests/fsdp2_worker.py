"""Worker for tests/test_distributed.py's FSDP2 test: `torchrun --nproc_per_node 2 tests/fsdp2_worker.py OUT`.

accelerate selects FSDP only on accelerator devices (on CPU it silently runs DDP), so this worker shards the
trainer's student, with the distillation method registered inside it, by hand with torch's FSDP2 `fully_shard`
(per decoder layer, then the root) on gloo, and runs `EVLDistillTrainer.compute_loss` forward and backward. Each
rank writes its loss before and after sharding, whether the aligners are sharded (DTensor), and the largest gap
between the sharded gradients (FSDP2's reduce-scatter averages over ranks) and the rank-averaged unsharded ones.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

warnings.filterwarnings("ignore")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch.distributed as dist  # noqa: E402
from torch.distributed.fsdp import fully_shard  # noqa: E402

from evl_kd_trainer.testing import build_tiny_llava_next, build_tiny_qwen3_vl, make_tiny_vlm_dataset  # noqa: E402
from evl_kd_trainer.trainer import EVLDistillConfig, EVLDistillTrainer  # noqa: E402


def main() -> None:
    out = sys.argv[1]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    student, student_processor = build_tiny_qwen3_vl(seed=0)
    teacher, teacher_processor = build_tiny_llava_next(seed=1)
    args = EVLDistillConfig(
        output_dir=os.path.join(out, f"run{rank}"),
        per_device_train_batch_size=2,
        bf16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )
    dataset = make_tiny_vlm_dataset(n=2 * world, seed=0)
    trainer = EVLDistillTrainer(
        student,
        teacher_model=teacher,
        args=args,
        train_dataset=dataset,
        processing_class=student_processor,
        teacher_processing_class=teacher_processor,
    )
    batch = trainer.data_collator([dataset[2 * rank], dataset[2 * rank + 1]])
    model, method = trainer.model, trainer.kd_method
    names = [name for name, _ in method.named_parameters()]

    reference = trainer.compute_loss(model, dict(batch))
    reference.backward()
    expected = {}
    for name, param in method.named_parameters():
        grad = param.grad.detach().clone()
        dist.all_reduce(grad)
        expected[name] = grad / world
    model.zero_grad(set_to_none=True)

    for layer in model.model.language_model.layers:
        fully_shard(layer)
    fully_shard(model)
    sharded = trainer.compute_loss(model, dict(batch))
    sharded.backward()
    params = dict(method.named_parameters())
    gap = max(float((params[n].grad.full_tensor() - expected[n]).abs().max()) for n in names)
    result = {
        "rank": rank,
        "world": world,
        "loss_unsharded": float(reference),
        "loss_sharded": float(sharded),
        "aligners_sharded": all(type(p).__name__ == "DTensor" for p in params.values()),
        "grad_gap": gap,
        "grad_scale": max(float(g.abs().max()) for g in expected.values()),
    }
    with open(os.path.join(out, f"rank{rank}.json"), "w") as handle:
        json.dump(result, handle)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
