"""CPU thread contention: seconds per training step alone and beside another CPU-bound process.

    .venv/bin/python benchmarks/bench_contention.py --json bench_output/contention.json

The workload is the demo's slowest stage at a small scale: SFT steps of the demo's tiny flat LLaVA-NeXT teacher
(batch 8, 224x64 strips), through `VLMSFTTrainer` and `DualViewCollator`, timed after two warm-up steps. Each
thread setting runs in a fresh process, once alone and once beside a second process that keeps one core busy (a
pure-Python loop, like any other single-threaded job on a shared machine). A fair share of 2 cores gives the
workload 1 core, so "proportional" degradation is at most about 2x; OpenMP threads that spin-wait for a core
the other process holds degrade far more.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETTINGS: dict[str, dict[str, str]] = {
    "torch defaults (OpenMP spins)": {},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "GOMP_SPINCOUNT=20000": {"GOMP_SPINCOUNT": "20000"},
    "GOMP_SPINCOUNT=2000": {"GOMP_SPINCOUNT": "2000"},
    "1 thread (OMP_NUM_THREADS=1)": {"OMP_NUM_THREADS": "1"},
}


def worker(steps: int, warmup: int, batch: int) -> None:
    """Train the demo teacher for `warmup + steps` steps; print one JSON line with the per-step times."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import tempfile

    import torch
    from transformers import TrainerCallback

    from evl_kd_trainer.data.collator import DualViewCollator
    from evl_kd_trainer.demo.models import build_demo_teacher
    from evl_kd_trainer.scripts.sft import VLMSFTConfig, VLMSFTTrainer
    from evl_kd_trainer.testing import make_tiny_vlm_dataset

    class StepTimes(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.start = 0.0

        def on_step_begin(self, *args, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, *args, **kwargs):
            self.times.append(time.perf_counter() - self.start)

    torch.manual_seed(0)
    teacher, processor = build_demo_teacher()
    dataset = make_tiny_vlm_dataset(n=batch * (steps + warmup), seed=0, sizes=((224, 64),))
    timer = StepTimes()
    with tempfile.TemporaryDirectory() as out:
        args = VLMSFTConfig(
            output_dir=out, max_steps=steps + warmup, per_device_train_batch_size=batch, learning_rate=2e-4,
            bf16=False, use_cpu=True, gradient_checkpointing=False, report_to="none", save_strategy="no",
            disable_tqdm=True, logging_steps=1000, remove_unused_columns=False,
        )  # fmt: skip
        trainer = VLMSFTTrainer(
            model=teacher, args=args, train_dataset=dataset, processing_class=processor,
            data_collator=DualViewCollator(processor), callbacks=[timer],
        )  # fmt: skip
        trainer.train()
    timed = timer.times[warmup:]
    print(json.dumps({"median_s": statistics.median(timed), "times": timed, "threads": torch.get_num_threads()}))


def run_case(env_overrides: dict[str, str], busy: bool, steps: int, warmup: int, batch: int) -> dict:
    env = {**os.environ, **env_overrides, "PYTHONPATH": str(ROOT)}
    for key in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT"):
        if key not in env_overrides:
            env.pop(key, None)
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        time.sleep(0.5 if busy else 0.0)
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            "--steps",
            str(steps),
            "--warmup",
            str(warmup),
            "--batch",
            str(batch),
        ]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--batch", type=int, default=8, help="samples per step")
    parser.add_argument("--json", type=str, default=None, help="write the results here")
    parser.add_argument("--settings", nargs="*", default=None, help=f"a subset of: {', '.join(SETTINGS)}")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.steps, args.warmup, args.batch)
        return 0
    rows = []
    chosen = args.settings or list(SETTINGS)
    for name, env in ((name, SETTINGS[name]) for name in chosen):
        alone = run_case(env, busy=False, steps=args.steps, warmup=args.warmup, batch=args.batch)
        shared = run_case(env, busy=True, steps=args.steps, warmup=args.warmup, batch=args.batch)
        rows.append({"setting": name, "alone_s": alone["median_s"], "beside_busy_s": shared["median_s"]})
        print(f"{name}: alone {alone['median_s']:.3f} s/step, beside a busy process {shared['median_s']:.3f} s/step")
    print("\n| setting | alone (s/step) | beside a busy process (s/step) | slowdown |\n|---|---|---|---|")
    for row in rows:
        ratio = row["beside_busy_s"] / row["alone_s"]
        print(f"| {row['setting']} | {row['alone_s']:.3f} | {row['beside_busy_s']:.3f} | {ratio:.1f}x |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
