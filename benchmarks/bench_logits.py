"""The logit baselines' LM-head cost at the paper's real widths: full-sequence logits vs answer positions only.

    .venv/bin/python benchmarks/bench_logits.py --json bench_output/logits.json

What ULD, MultiLevelOT and DSKD read is the logits at the ~300 next-token answer positions; before, the trainer
applied both LM heads over the whole sequence. This times exactly that part, on one sample of the paper's shapes
(teacher PULSE-7B: 3252 positions x 4096 -> vocab 32001, under no_grad; student Qwen3-VL-2B: 334 positions x 2048
-> vocab 151936, forward and backward) with random weights, and reports the median time and the peak memory the
logits add (CPU: peak resident-set growth in a fresh process per case; CUDA: max allocated).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

SHAPES = {
    "teacher": {"length": 3252, "width": 4096, "vocab": 32001},
    "student": {"length": 334, "width": 2048, "vocab": 151936},
}
ANSWER_POSITIONS = 300


def _vm_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def shapes(quick: bool) -> dict[str, dict[str, int]]:
    """The paper's shapes, or a 16x smaller smoke-run version."""
    return {side: {k: max(v // 16, 8) for k, v in s.items()} if quick else dict(s) for side, s in SHAPES.items()}


def worker(mode: str, repeats: int, device: str, quick: bool = False) -> dict:
    import torch

    from evl_kd_trainer.methods import logits_at

    torch.manual_seed(0)
    dev = torch.device(device)
    sizes = shapes(quick)
    answer = ANSWER_POSITIONS // 16 if quick else ANSWER_POSITIONS
    heads = {side: torch.nn.Linear(s["width"], s["vocab"], bias=False).to(dev) for side, s in sizes.items()}
    hidden = {side: torch.randn(1, s["length"], s["width"], device=dev) for side, s in sizes.items()}
    positions = {}
    for side, s in sizes.items():
        mask = torch.zeros(1, s["length"], dtype=torch.bool, device=dev)
        mask[0, -answer - 1 : -1] = True
        positions[side] = mask
    student_hidden = hidden["student"].requires_grad_(True)

    def step() -> None:
        where = (lambda side: None) if mode == "full" else positions.get
        with torch.no_grad():
            teacher_logits, _ = logits_at(heads["teacher"], hidden["teacher"], where("teacher"))
        student_logits, _ = logits_at(heads["student"], student_hidden, where("student"))
        # a stand-in loss over what the methods read: the answer rows of both
        if mode == "full":
            student_rows = student_logits[positions["student"]]
            teacher_rows = teacher_logits[positions["teacher"]]
        else:
            student_rows, teacher_rows = student_logits[0], teacher_logits[0]
        loss = student_rows.float().logsumexp(-1).mean() + 0.0 * teacher_rows.float().sum()
        loss.backward()
        heads["student"].weight.grad = None
        student_hidden.grad = None

    step()  # warm-up
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident set
        base = _vm_kib("VmRSS:") * 1024
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() if dev.type == "cuda" else _vm_kib("VmHWM:") * 1024
    return {"mode": mode, "median_s": statistics.median(times), "peak_growth_mib": (peak - base) / 2**20}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="smoke run: shapes 16x smaller")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.repeats, args.device, args.quick)))
        return 0
    rows = []
    for mode in ("full", "positions"):
        cmd = [sys.executable, __file__, "--worker", mode, "--repeats", str(args.repeats), "--device", args.device]
        cmd += ["--quick"] if args.quick else []
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print("| LM heads applied | median (s) | peak memory growth (MiB) |\n|---|---|---|")
    for row in rows:
        label = "whole sequence (before)" if row["mode"] == "full" else f"{ANSWER_POSITIONS} answer positions (now)"
        print(f"| {label} | {row['median_s']:.3f} | {row['peak_growth_mib']:.0f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
