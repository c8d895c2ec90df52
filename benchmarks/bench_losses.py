"""Forward+backward time and peak memory of the three EVL-ECG loss terms at the paper's scale.

Shapes (issue 2, item 9): OT with 2880 teacher x 64 student visual tokens at width 2048 (B = 1, 4);
MHCA = CrossAttentionAligner + mhca_loss with L_s = 1024 / 4096, L_t = 1500, D_s = 2048, D_t = 4096,
h = 8 (B = 1); relational with L = 1024 / 4096, D = 2048 (B = 1).

Timing: one warm-up run, then the median (and min) of ``--repeats`` forward+backward runs.
Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` minus the allocation before the timed runs
(inputs and weights excluded). On CPU, the growth of the process's peak resident set: the kernel's
high-water mark ``VmHWM`` is reset through ``/proc/self/clear_refs`` (write "5") after the inputs are
built, and ``VmHWM - VmRSS`` (before) is reported; each case runs in its own interpreter
(``--isolate``, the CPU default) so memory an earlier case freed but the allocator kept cannot hide
a later case's growth. It includes allocator slack: read it as an upper bound. Prints a markdown table.

    python benchmarks/bench_losses.py --device cpu --repeats 3
    python benchmarks/bench_losses.py --device cuda --repeats 10
    python benchmarks/bench_losses.py --quick          # tiny shapes, a smoke run (used by the tests)
    python benchmarks/bench_losses.py --device cuda --json losses.json   # also every row as JSON
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from evl_kd_trainer.aligners import CrossAttentionAligner
from evl_kd_trainer.losses import mhca_loss, relational_loss, sinkhorn_ot_loss

Step = Callable[[], torch.Tensor]


@dataclass
class Case:
    """One benchmark row: ``build`` allocates inputs and returns a closure computing the loss."""

    term: str
    shape: str
    build: Callable[[torch.device, torch.dtype], Step]


def _leaf(shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(shape, device=device, dtype=dtype).requires_grad_(True)


def _clustered_leaf(
    shape: tuple[int, ...], centres: torch.Tensor, generator: torch.Generator, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Tokens around a few shared centres (visual tokens of one picture are far from isotropic)."""
    batch, count, _ = shape
    assignment = torch.randint(0, centres.shape[1], (batch, count), generator=generator)
    tokens = torch.gather(centres, 1, assignment[..., None].expand(-1, -1, centres.shape[-1]))
    tokens = tokens + 0.3 * torch.randn(shape, generator=generator)
    return tokens.to(device=device, dtype=dtype).requires_grad_(True)


def ot_case(batch: int, n_teacher: int, n_student: int, width: int, clustered: bool = False) -> Case:
    """OT between random tokens: isotropic Gaussians, or (``clustered``) 16 shared centres plus noise, where the
    annealed GeomLoss potentials are further from the converged plan and the log-domain polish does real work."""

    def build(device: torch.device, dtype: torch.dtype) -> Step:
        if clustered:
            generator = torch.Generator().manual_seed(0)
            centres = torch.randn(batch, 16, width, generator=generator)
            teacher = _clustered_leaf((batch, n_teacher, width), centres, generator, device, dtype)
            student = _clustered_leaf((batch, n_student, width), centres, generator, device, dtype)
        else:
            teacher = _leaf((batch, n_teacher, width), device, dtype)
            student = _leaf((batch, n_student, width), device, dtype)
        return lambda: sinkhorn_ot_loss(teacher, student, epsilon=0.1)

    kind = ", clustered" if clustered else ""
    return Case("OT (sinkhorn_ot)", f"B={batch}, N={n_teacher}, M={n_student}, D={width}{kind}", build)


def mhca_case(l_s: int, l_t: int, d_s: int, d_t: int, heads: int) -> Case:
    def build(device: torch.device, dtype: torch.dtype) -> Step:
        aligner = CrossAttentionAligner(d_s, d_t, num_heads=heads).to(device=device, dtype=dtype)
        student = _leaf((1, l_s, d_s), device, dtype)
        teacher = torch.randn(1, l_t, d_t, device=device, dtype=dtype)  # frozen teacher: no gradient
        return lambda: mhca_loss(student, aligner(student, teacher))

    return Case("MHCA (aligner + mhca)", f"B=1, Ls={l_s}, Lt={l_t}, Ds={d_s}, Dt={d_t}, h={heads}", build)


def relational_case(length: int, width: int) -> Case:
    def build(device: torch.device, dtype: torch.dtype) -> Step:
        teacher = _leaf((1, length, width), device, dtype)  # the aligned teacher is trainable
        student = _leaf((1, length, width), device, dtype)
        return lambda: relational_loss(teacher, student)

    return Case("relational", f"B=1, L={length}, D={width}", build)


def paper_cases(quick: bool) -> list[Case]:
    if quick:
        return [
            ot_case(1, 48, 8, 32),
            ot_case(2, 48, 8, 32, clustered=True),
            mhca_case(16, 24, 32, 64, 8),
            relational_case(32, 32),
            relational_case(64, 32),
        ]
    return [
        ot_case(1, 2880, 64, 2048),
        ot_case(4, 2880, 64, 2048),
        ot_case(1, 2880, 64, 2048, clustered=True),
        ot_case(4, 2880, 64, 2048, clustered=True),
        mhca_case(1024, 1500, 2048, 4096, 8),
        mhca_case(4096, 1500, 2048, 4096, 8),
        relational_case(1024, 2048),
        relational_case(4096, 2048),
    ]


def _proc_status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_case(case: Case, device: torch.device, dtype: torch.dtype, repeats: int) -> dict[str, float | str | None]:
    """Warm-up, then ``repeats`` timed forward+backward passes; returns times in ms and peak memory in MiB."""
    step = case.build(device, dtype)

    def forward_backward() -> float:
        loss = step()
        loss.backward()
        _sync(device)
        return float(loss.detach())

    value = forward_backward()  # warm-up: lazy inits, GeomLoss/SDPA kernel selection
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        base = _proc_status_kib("VmRSS")
        if not _reset_peak_rss():
            base = None
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        forward_backward()
        times.append((time.perf_counter() - start) * 1e3)
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    else:
        hwm = _proc_status_kib("VmHWM")
        peak = (hwm - base) / 1024 if base is not None and hwm is not None else None
    gc.collect()
    return {"median_ms": statistics.median(times), "min_ms": min(times), "peak_mib": peak, "value": value}


def machine_description(device: torch.device) -> str:
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"
    return f"torch {torch.__version__}, {where}, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (after one warm-up)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes: a smoke run in a few seconds")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16"],
        help="input/weight dtype; auto = bfloat16 on cuda (the paper trains in bf16), float32 on cpu",
    )
    parser.add_argument(
        "--isolate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="one subprocess per case (default: on for CPU full runs, where peak RSS needs a fresh process)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write every row to this JSON file")
    parser.add_argument("--only", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda requested but no CUDA device is available")
    device = torch.device(args.device)
    dtype_name = args.dtype if args.dtype != "auto" else ("bfloat16" if device.type == "cuda" else "float32")
    dtype = getattr(torch, dtype_name)
    torch.manual_seed(0)

    cases = paper_cases(args.quick)
    if args.only is not None:  # worker mode of --isolate: one case, one JSON line
        print(json.dumps(run_case(cases[args.only], device, dtype, args.repeats)))
        return 0
    isolate = args.isolate if args.isolate is not None else (device.type == "cpu" and not args.quick)

    print(f"# EVL-ECG loss terms, forward+backward ({machine_description(device)}, {dtype_name})\n")
    memory = "peak alloc growth (MiB)" if device.type == "cuda" else "peak RSS growth (MiB)"
    print(f"| term | shape | median (ms) | min (ms) | {memory} |")
    print("|---|---|---:|---:|---:|")
    rows = []
    for index, case in enumerate(cases):
        r = _run_isolated(index, args, dtype_name) if isolate else run_case(case, device, dtype, args.repeats)
        peak = "n/a" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        print(f"| {case.term} | {case.shape} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | {peak} |", flush=True)
        rows.append({"term": case.term, "shape": case.shape, **r})
    if args.json is not None:
        report = {"device": machine_description(device), "dtype": dtype_name, "repeats": args.repeats, "rows": rows}
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def _run_isolated(index: int, args: argparse.Namespace, dtype_name: str) -> dict[str, float | str | None]:
    """Run one case in a fresh interpreter, so memory freed (but kept by the allocator) by an earlier
    case cannot hide this one's peak RSS growth."""
    cmd = [sys.executable, __file__, "--device", args.device, "--repeats", str(args.repeats)]
    cmd += ["--dtype", dtype_name, "--only", str(index)] + (["--quick"] if args.quick else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


if __name__ == "__main__":
    raise SystemExit(main())
