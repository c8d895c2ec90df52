"""Seconds per training step and peak memory of every distillation method, beside SFT and TRL's GOLD trainer.

Issue 4 item 10 and issue 7 item 5: median time per optimizer step and peak memory of ``EVLDistillTrainer``
for each ``kd_method`` (evl, sft, uld, multilevel_ot, dskd, emkd), of TRL's ``SFTTrainer`` on the student, of
the teacher's forward alone, and of TRL's GOLD trainer (the peer for cross-tokenizer VLM distillation), in the
layout of the paper's Table 7. Every method is also given as the normalised ratio

    step / (SFT step + teacher forward)

i.e. its cost over the unavoidable minimum of "train the student and run the teacher once"; the target for
EVL-ECG is <= 1.10 on the ``small`` config. A breakdown table shows where each step's time goes.

Configs (``step_configs.py``): ``tiny`` and ``small`` run on CPU in minutes; ``gpu-full`` builds the paper's
real-size models (Qwen3-VL-2B student, PULSE-7B teacher as converted) with random weights on a GPU;
``real-width-shallow`` keeps their widths, vocabularies and vision towers with 2 decoder layers each, on CPU. Each case
runs in its own interpreter by default (``--isolate``), so its peak memory is its own. ``--quick`` is a smoke
run (tiny config, 2 timed steps, in-process).

``--cached`` (issue 13, item 6) adds, for every selected method that reads a teacher, the case ``<method>_cached``:
the same training from a teacher-feature cache (``teacher_cache_dir``; no teacher built or run). The caches are built
first, over the run's samples (``--cache-compression``, default bf16), outside every timed step; each cached case
reports its ratio to the plain SFT step (``x SFT``: the target for cached EVL-ECG is <= 1.10 on ``small``) and to
its live-teacher twin (``x live``), and its cache's build throughput and bytes per sample.

    python benchmarks/bench_step.py --config tiny small --json step_cpu.json
    python benchmarks/bench_step.py --config gpu-full --steps 3 --warmup 1 --json step_gpu.json
    python benchmarks/bench_step.py --config gpu-full --dry-run    # sizes and token counts only, any machine
    python benchmarks/bench_step.py --config real-width-shallow --json step_real_width.json  # real widths, CPU
    python benchmarks/bench_step.py --quick --json /tmp/quick.json  # smoke run (used by the tests)
    python benchmarks/bench_step.py --config small --cached --json step_cached.json  # cached vs live teacher
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules, also when imported by path

import torch  # noqa: E402
from step_cache import CACHED_CASES, build_step_cache, live_method  # noqa: E402
from step_cases import CASES, LABELS, METHODS, REFERENCE_CASES, RunSettings, StepGate, run_case  # noqa: E402
from step_configs import CONFIGS, StepConfig, build_student, build_teacher, count_parameters, make_dataset  # noqa: E402

RESULT_PREFIX = "BENCH_STEP_RESULT "
BREAKDOWN_COLUMNS = (
    "teacher inputs",
    "teacher forward",
    "teacher from cache",
    "student forward (+ CE)",
    "features (+ logits)",
    "KD terms forward",
    "backward",
    "clip + optimizer",
    "cache read (in other)",  # the cached cases' shard reads, in the data loading that "other" counts
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", nargs="+", default=None, choices=sorted(CONFIGS), help="default: tiny small")
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated subset of {','.join(METHODS)}, or cached cases such as evl_cached (SFTTrainer and the "
        "teacher forward run too, unless --skip-references)",
    )
    parser.add_argument("--steps", type=int, default=None, help="timed optimizer steps per case (default 10, gpu 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 2, gpu 1)")
    parser.add_argument("--batch-size", type=int, default=None, help="per-device micro-batch (config default)")
    parser.add_argument("--grad-accum", type=int, default=None, help="gradient accumulation (config default)")
    parser.add_argument("--answer-tokens", type=int, default=None, help="answer length in student tokens")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads on CPU (default 1: on a shared machine, multi-threaded steps stall on busy cores; 0 = "
        "torch's default)",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny config, 2 steps, in-process")
    parser.add_argument("--json", type=Path, default=None, help="also write every number to this JSON file")
    parser.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None, help="one process per case")
    parser.add_argument(
        "--interleave",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run every case's process at once, taking turns one step at a time (default: on for isolated CPU "
        "runs, off on CUDA, where one device cannot hold every case)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print model sizes and token counts, train nothing")
    parser.add_argument(
        "--full-logits",
        action="store_true",
        help="logit methods compute full-sequence logits (the behaviour before LM heads ran only where read)",
    )
    parser.add_argument(
        "--cached",
        action="store_true",
        help="also time <method>_cached for every selected method that reads a teacher: training from a teacher "
        "cache built before the timed steps",
    )
    parser.add_argument(
        "--cache-compression",
        default="bf16",
        help="compression of the cached cases' caches: fp32, bf16 (default), fp8 or pca:R",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="build the caches under this folder and keep them (a rerun reuses them); default: a temporary folder",
    )
    parser.add_argument(
        "--skip-references",
        action="store_true",
        help="do not run SFTTrainer and the teacher forward (their numbers come from another run; no ratios here)",
    )
    parser.add_argument("--build-caches", default=None, help=argparse.SUPPRESS)  # worker mode: build, one JSON line
    parser.add_argument("--only", default=None, help=argparse.SUPPRESS)  # worker mode: one case, one JSON line
    parser.add_argument("--gated", action="store_true", help=argparse.SUPPRESS)  # worker waits for "go" per step
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS) - set(CACHED_CASES))
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {list(METHODS)} or {list(CACHED_CASES)}")
    # A cached case named directly runs alone (without its live twin); --cached adds the twin of every method.
    args.cached_cases = [c for c in CACHED_CASES if c in methods or (args.cached and live_method(c) in methods)]
    args.methods = [m for m in METHODS if m in methods]
    if args.cached_cases:
        from evl_kd_trainer.cache.compression import parse_compression

        try:
            parse_compression(args.cache_compression)
        except ValueError as err:
            parser.error(f"--cache-compression: {err}")
    if args.config is None:
        args.config = ["tiny"] if args.quick else ["tiny", "small"]
    if args.quick:
        args.steps = args.steps or 2
        args.warmup = args.warmup or 1
    for name in ("steps", "warmup"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be >= 1")
    return args


def resolve_device(args: argparse.Namespace, config: StepConfig) -> torch.device:
    wanted = args.device
    if wanted == "auto":
        wanted = "cuda" if config.name == "gpu-full" or torch.cuda.is_available() else "cpu"
    if wanted == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"config {config.name!r} needs a CUDA device and none is available (try --dry-run).")
    return torch.device(wanted)


def settings_for(args: argparse.Namespace, name: str) -> RunSettings:
    config = CONFIGS[name].with_overrides(
        batch_size=args.batch_size, grad_accum=args.grad_accum, answer_tokens=args.answer_tokens
    )
    gpu = name == "gpu-full"
    steps = args.steps or (3 if gpu else 10)
    warmup = args.warmup or (1 if gpu else 2)
    device = torch.device("cpu") if args.dry_run else resolve_device(args, config)
    cache_root = None if args.cache_dir is None else str(args.cache_dir)
    return RunSettings(config=config, steps=steps, warmup=warmup, device=device, cache_root=cache_root)


def worker_command(case: str, name: str, args: argparse.Namespace, settings: RunSettings) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--only", case, "--config", name]
    cmd += ["--steps", str(settings.steps), "--warmup", str(settings.warmup), "--device", settings.device.type]
    cmd += ["--threads", str(args.threads)]
    if args.full_logits:
        cmd += ["--full-logits"]
    for flag, value in (("--batch-size", args.batch_size), ("--grad-accum", args.grad_accum)):
        if value is not None:
            cmd += [flag, str(value)]
    if args.answer_tokens is not None:
        cmd += ["--answer-tokens", str(args.answer_tokens)]
    if args.cache_dir is not None:
        cmd += ["--cache-dir", str(args.cache_dir), "--cache-compression", args.cache_compression]
    return cmd


def build_caches(
    methods: list[str], name: str, args: argparse.Namespace, settings: RunSettings, in_process: bool
) -> dict[str, Any]:
    """Each method's cache over the run's samples under ``--cache-dir``, built before any timed step: in this
    process, or (``in_process=False``, isolated cases) in a fresh interpreter, so the builder's teacher never
    shares a process or a device allocator with a timed case."""
    if in_process:
        samples = settings.total_steps * settings.samples_per_step
        return {
            m: build_step_cache(m, settings.config, samples, settings.device, args.cache_dir, args.cache_compression)
            for m in methods
        }
    cmd = worker_command("-", name, args, settings)
    cmd[cmd.index("--only") : cmd.index("--only") + 2] = ["--build-caches", ",".join(methods)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"building the caches of {name!r} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


def run_isolated(case: str, name: str, args: argparse.Namespace, settings: RunSettings) -> dict[str, Any]:
    """One case in a fresh interpreter, so memory an earlier case left in the allocator cannot hide its peak."""
    proc = subprocess.run(worker_command(case, name, args, settings), capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"case {case!r} of config {name!r} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len(RESULT_PREFIX) :])


class _Worker:
    """One gated worker process (see ``step_cases.StepGate``): stdin takes ``go``, stdout gives sync lines."""

    def __init__(self, case: str, cmd: list[str]) -> None:
        self.case = case
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [*cmd, "--gated"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True
        )

    def read_until_sync(self) -> dict[str, Any] | None:
        """Skip the trainer's log lines up to the next sync line (``None``) or the result line (its JSON)."""
        for line in self.proc.stdout:
            if line.startswith(StepGate.SYNC_LINE):
                return None
            if line.startswith(RESULT_PREFIX):
                return json.loads(line[len(RESULT_PREFIX) :])
        self.proc.wait()
        self.stderr.seek(0)
        raise RuntimeError(f"case {self.case!r} exited ({self.proc.returncode}):\n{self.stderr.read()[-4000:]}")

    def go(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.stderr.close()


def run_interleaved(cases: list[str], name: str, args: argparse.Namespace, settings: RunSettings) -> dict[str, Any]:
    """Every case in its own process, all started at once, taking turns one optimizer step at a time.

    Each process's peak memory stays its own, and a neighbour's load on a shared machine falls on every case's
    steps alike (the turn order rotates every step), so the ratios between cases stay meaningful even when the
    absolute times drift. Needs the memory of all cases at once (about 9 x 0.9 GiB for ``small``).
    """
    workers = {case: _Worker(case, worker_command(case, name, args, settings)) for case in cases}
    results: dict[str, Any] = {}
    try:
        for worker in workers.values():
            worker.read_until_sync()  # built and waiting before its first step
        for step in range(settings.total_steps):
            order = cases[step % len(cases) :] + cases[: step % len(cases)]
            for case in order:
                workers[case].go()
                result = workers[case].read_until_sync()
                if step == settings.total_steps - 1:
                    if result is None:
                        raise RuntimeError(f"case {case!r} did not report after its last step")
                    results[case] = result
                    print(f"  {LABELS[case]}: {result['median_s']:.4f} s/step", file=sys.stderr, flush=True)
    finally:
        for worker in workers.values():
            worker.close()
    return {case: results[case] for case in cases}


# --------------------------------------------------------------------------------------------------- tables
def add_ratios(cases: dict[str, dict[str, Any]], key: str = "median_s", suffix: str = "") -> float | None:
    """Each case's ``ratio_sft_plus_teacher<suffix>`` = its ``key`` / (SFT's + the teacher forward's ``key``)
    and ``ratio_sft<suffix>`` = its ``key`` / SFT's; returns the denominator."""
    if "sft_trl" not in cases or "teacher_forward" not in cases:
        return None
    sft = cases["sft_trl"][key]
    denominator = sft + cases["teacher_forward"][key]
    for result in cases.values():
        result[f"ratio_sft_plus_teacher{suffix}"] = result[key] / denominator
        result[f"ratio_sft{suffix}"] = result[key] / sft
    return denominator


def add_live_ratios(cases: dict[str, dict[str, Any]], key: str = "median_s", suffix: str = "") -> None:
    """Each cached case's ``ratio_live<suffix>`` = its ``key`` / its live-teacher twin's, and ``peak_ratio_live`` =
    its peak memory / the twin's."""
    for case, result in cases.items():
        live = cases.get(live_method(case) or "")
        if live is None:
            continue
        result[f"ratio_live{suffix}"] = result[key] / live[key]
        if result.get("peak_mib") and live.get("peak_mib"):
            result["peak_ratio_live"] = result["peak_mib"] / live["peak_mib"]


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _ratio(r: dict[str, Any], key: str) -> str:
    return f"{r[key]:.2f}" if key in r else ""


def results_table(settings: RunSettings, cases: dict[str, dict[str, Any]]) -> str:
    """Table 7 layout: method, seconds per step, peak memory, plus the normalised ratios.

    On CPU the ratios use process CPU time (robust to other processes on a shared machine), with the
    wall-clock ratio beside it; on CUDA they use wall time."""
    cached = any(live_method(c) for c in cases)  # the cached cases' columns: step and memory over the live twin's
    if settings.device.type == "cuda":
        lines = [
            "| method | s/step (median) | s/step (min) | max allocated (MiB) | max reserved (MiB) | "
            "x (SFT + teacher fwd) | x SFT |" + (" x live | memory x live |" if cached else ""),
            "|---|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if cached else ""),
        ]
        for case in (c for c in CASES if c in cases):
            r = cases[case]
            lines.append(
                f"| {LABELS[case]} | {r['median_s']:.3f} | {r['min_s']:.3f} | {_mib(r.get('peak_mib'))} | "
                f"{_mib(r.get('peak_reserved_mib'))} | {_ratio(r, 'ratio_sft_plus_teacher')} | {_ratio(r, 'ratio_sft')} |"
                + (f" {_ratio(r, 'ratio_live')} | {_ratio(r, 'peak_ratio_live')} |" if cached else "")
            )
        return "\n".join(lines)
    lines = [
        "| method | CPU s/step (median) | wall s/step (median) | peak RSS (MiB) | RSS before training (MiB) | "
        "x (SFT + teacher fwd), CPU | same, wall | x SFT, CPU |" + (" x live, CPU | memory x live |" if cached else ""),
        "|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|" if cached else ""),
    ]
    for case in (c for c in CASES if c in cases):
        r = cases[case]
        ratios = (
            ("", "", "")
            if case == "teacher_forward"
            else (
                _ratio(r, "ratio_sft_plus_teacher_cpu"),
                _ratio(r, "ratio_sft_plus_teacher"),
                _ratio(r, "ratio_sft_cpu"),
            )
        )
        if cached:
            ratios += (_ratio(r, "ratio_live_cpu"), _ratio(r, "peak_ratio_live"))
        lines.append(
            f"| {LABELS[case]} | {r['cpu_median_s']:.4f} | {r['median_s']:.4f} | {_mib(r.get('peak_mib'))} | "
            f"{_mib(r.get('before_mib'))} | " + " | ".join(ratios) + " |"
        )
    return "\n".join(lines)


def cache_table(builds: dict[str, dict[str, Any]]) -> str:
    """The cached cases' caches: how long each took to build, its throughput and size."""
    lines = [
        "| cache of | compression | records | build (s) | samples/s | bytes per sample |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for method, b in builds.items():
        rate = "reused" if b["samples_per_s"] is None else f"{b['samples_per_s']:.1f}"
        lines.append(
            f"| {LABELS[method]} | {b['compression']} | {b['records']} | {b['build_s']:.2f} | {rate} | "
            f"{b['bytes_per_sample']:,.0f} |"
        )
    return "\n".join(lines)


def breakdown_table(cases: dict[str, dict[str, Any]], cuda: bool) -> str:
    """Mean seconds per step of each wrapped part (CPU time on CPU, wall time on CUDA); a column only where some
    case has that part."""
    timed = [case for case in CASES if case in cases and "breakdown_s" in cases[case]]
    columns = [c for c in BREAKDOWN_COLUMNS if any(c in cases[case]["breakdown_s"] for case in timed)]
    header = "| method | step | " + " | ".join(columns) + " | other (data, logging) |"
    lines = [header, "|---|" + "---:|" * (len(columns) + 2)]
    for case in timed:
        parts = cases[case]["breakdown_s"]
        step = cases[case]["mean_s" if cuda else "cpu_mean_s"]
        cells = [f"{parts[c]:.4f}" if c in parts else "" for c in columns]
        known = parts.get("loss forward", 0.0) + parts.get("backward", 0.0) + parts.get("clip + optimizer", 0.0)
        lines.append(f"| {LABELS[case]} | {step:.4f} | " + " | ".join(cells) + f" | {step - known:.4f} |")
    return "\n".join(lines)


def machine_description(device: torch.device) -> str:
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads"
    )
    return f"torch {torch.__version__}, {where}, Python {platform.python_version()}"


def dry_run(name: str, settings: RunSettings) -> dict[str, Any]:
    """Sizes on the meta device (no memory, any machine) and the token counts of one collated batch."""
    from evl_kd_trainer.data.collator import DualViewCollator

    config = settings.config
    student, processor = build_student(config, "meta")
    teacher, teacher_processor = build_teacher(config, "meta")
    collator = DualViewCollator(processor, teacher_processor, config.max_length, config.teacher_max_length)
    batch = collator(list(make_dataset(config, config.batch_size, processor.tokenizer)))
    info = {
        "student_parameters": count_parameters(student),
        "teacher_parameters": count_parameters(teacher),
        "student_tokens": batch["attention_mask"].sum(1).tolist(),
        "teacher_tokens": batch["teacher_attention_mask"].sum(1).tolist(),
        "teacher_visual_tokens": (batch["teacher_input_ids"] == teacher.config.image_token_index).sum(1).tolist(),
        "student_visual_tokens": (batch["input_ids"] == student.config.image_token_id).sum(1).tolist(),
        "student_dtypes": sorted({str(p.dtype).removeprefix("torch.") for p in student.parameters()}),
        "teacher_dtypes": sorted({str(p.dtype).removeprefix("torch.") for p in teacher.parameters()}),
        "student_decoder_layers": student.config.text_config.num_hidden_layers,
        "teacher_decoder_layers": teacher.config.text_config.num_hidden_layers,
        "student_vocab_size": student.config.text_config.vocab_size,
        "teacher_vocab_size": teacher.config.text_config.vocab_size,
        "teacher_class": type(teacher).__name__,
    }
    print(f"## {name}: {config.description}\n")
    for key, value in info.items():
        print(f"- {key}: {value:,}" if isinstance(value, int) else f"- {key}: {value}")
    return info


def use_full_sequence_logits() -> None:
    """Every registered method asks for the whole sequence's logits (``logit_positions`` -> ``None``): the
    before-picture of reading LM heads only at the positions a method uses, in the same harness."""
    from evl_kd_trainer.methods import load_builtin_methods
    from evl_kd_trainer.methods.base import DistillationMethod

    load_builtin_methods()
    for cls in _all_subclasses(DistillationMethod):
        cls.logit_positions = lambda self, features, side: None


def _all_subclasses(cls: type) -> list[type]:
    found = []
    for sub in cls.__subclasses__():
        found += [sub, *_all_subclasses(sub)]
    return found


def config_report(
    settings: RunSettings, isolate: bool, interleave: bool, cases: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """One config's JSON entry (written after every finished case too, so a run cut short keeps what it measured)."""
    config = settings.config
    return {
        "description": config.description,
        "device": machine_description(settings.device),
        "batch_size": config.batch_size,
        "grad_accum": config.grad_accum,
        "steps": settings.steps,
        "warmup": settings.warmup,
        "isolated": isolate,
        "interleaved": interleave,
        "threads": torch.get_num_threads(),
        "cases": cases,
    }


def write_report(args: argparse.Namespace, report: dict[str, Any]) -> None:
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))


def run_config(name: str, args: argparse.Namespace, report: dict[str, Any]) -> None:
    """Every selected case of one config, its tables printed and its numbers put in ``report``."""
    settings = settings_for(args, name)
    if args.dry_run:
        report["configs"][name] = {"dry_run": dry_run(name, settings)}
        return
    isolate = args.isolate if args.isolate is not None else not args.quick
    interleave = args.interleave if args.interleave is not None else settings.device.type == "cpu"
    interleave = interleave and isolate
    config = settings.config
    print(f"## {name} ({machine_description(settings.device)})\n\n{config.description}")
    print(
        f"\nbatch {config.batch_size} x accumulation {config.grad_accum} = {settings.samples_per_step} samples "
        f"per step; {settings.steps} timed steps after {settings.warmup} warm-up; "
        f"{'one process per case' if isolate else 'in-process'}"
        f"{', interleaved one step at a time' if interleave else ''}\n",
        flush=True,
    )
    cached = args.cached_cases
    builds: dict[str, Any] = {}
    if cached:  # before any case starts: building a cache is never part of a timed step
        builds = build_caches([live_method(c) for c in cached], name, args, settings, in_process=not isolate)
        for method, b in builds.items():
            print(f"  cache of {LABELS[method]}: {b['records']} records in {b['build_s']:.2f} s", file=sys.stderr)
    names = [*(() if args.skip_references else REFERENCE_CASES), *args.methods, *cached]
    cases: dict[str, dict[str, Any]] = {}
    if interleave:
        cases = run_interleaved(names, name, args, settings)
    for case in names if not interleave else ():
        cases[case] = run_isolated(case, name, args, settings) if isolate else run_case(case, settings)
        print(f"  {LABELS[case]}: {cases[case]['median_s']:.4f} s/step", file=sys.stderr, flush=True)
        if live_method(case):
            cases[case]["cache"] = builds[live_method(case)]
        report["configs"][name] = {**config_report(settings, isolate, interleave, cases), "partial": True}
        write_report(args, report)
    for case in cached:
        cases[case]["cache"] = builds[live_method(case)]
    denominator = add_ratios(cases)
    cpu_denominator = add_ratios(cases, "cpu_median_s", "_cpu")
    add_live_ratios(cases)
    add_live_ratios(cases, "cpu_median_s", "_cpu")
    cuda = settings.device.type == "cuda"
    print(results_table(settings, cases) + "\n")
    print(breakdown_table(cases, cuda) + "\n")
    if builds:
        print(cache_table(builds) + "\n")
    tokens = cases.get("teacher_forward", {}).get("tokens_per_sample", {})
    if tokens:
        print("mean tokens per sample: " + ", ".join(f"{k} {v:.0f}" for k, v in tokens.items()) + "\n", flush=True)
    report["configs"][name] = {
        **config_report(settings, isolate, interleave, cases),
        "sft_plus_teacher_forward_s": denominator,
        "sft_plus_teacher_forward_cpu_s": cpu_denominator,
    }
    write_report(args, report)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.full_logits:
        use_full_sequence_logits()
    if args.build_caches is not None:  # worker mode: build the named methods' caches under --cache-dir
        settings = settings_for(args, args.config[0])
        builds = build_caches(args.build_caches.split(","), args.config[0], args, settings, in_process=True)
        print(RESULT_PREFIX + json.dumps(builds), flush=True)
        return 0
    if args.only is not None:
        settings = settings_for(args, args.config[0])
        result = run_case(args.only, settings, StepGate(enabled=args.gated))
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return 0
    report: dict[str, Any] = {"configs": {}}
    with contextlib.ExitStack() as stack:
        if args.cached_cases and args.cache_dir is None and not args.dry_run:
            args.cache_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_step_caches_")))
        for name in args.config:
            run_config(name, args, report)
    write_report(args, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
