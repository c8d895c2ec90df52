"""Collect the parts of ``gpu_check.sh`` into one JSON file (issue 13, item 7).

Each part left ``<part>.json`` (its benchmark's own report), ``<part>.status`` ("exit-code milliseconds") and
``<part>.log`` in the work folder. This keeps the numbers the check is about, and derives:

- ``losses``: per term, the slowest batch-1 row (the clustered OT row where present: visual tokens of one picture
  are clustered), their sum per sample, times the samples of one step (``batch x accumulation`` of the step
  part's config), as a share of the SFT step and of the EVL-ECG step (target: < 2 % of a step); beside it, the
  share the KD terms' forward took inside the measured EVL-ECG steps;
- ``step``: s/step (median, wall clock), peak memory (CUDA: max allocated; CPU: peak resident set) per case,
  EVL-ECG against the paper's Table 7 (8.54 s, 56.4 GB);
- ``cached``: the cached EVL-ECG step, its cache's build throughput and size, and its ratios to the SFT step
  (target <= 1.10) and to the live-teacher step of the ``step`` part.

A part that failed, timed out or left no JSON is kept with its exit code and the tail of its log; the exit code
of this script is 1 unless every part finished.

    python benchmarks/gpu_check_collect.py --work DIR --mode gpu --config gpu-full --output gpu_check.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

PARTS = ("losses", "step", "cached")
PAPER_TABLE7_EVL = {"s_per_step": 8.54, "peak_gb": 56.4, "setting": "1x H100, global batch 48"}
LOSS_SHARE_TARGET = 0.02
CACHED_SFT_TARGET = 1.10
TIMEOUT_CODES = (124, 137)


def read_part(work: Path, name: str) -> dict[str, Any]:
    """A part's exit code, wall time, report (``None`` when it left none) and, when it failed, its log's tail."""
    status_path = work / f"{name}.status"
    rc, millis = (int(v) for v in status_path.read_text().split()) if status_path.is_file() else (None, None)
    report_path = work / f"{name}.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else None
    part: dict[str, Any] = {"rc": rc, "elapsed_s": None if millis is None else millis / 1000, "timed_out": False}
    part["timed_out"] = rc in TIMEOUT_CODES
    if rc != 0:
        log = work / f"{name}.log"
        part["log_tail"] = log.read_text(errors="replace")[-3000:] if log.is_file() else ""
    part["report"] = report
    return part


def _config(report: dict[str, Any] | None) -> dict[str, Any]:
    """The single config entry of a bench_step report (``{}`` when there is none)."""
    if not report or not report.get("configs"):
        return {}
    return next(iter(report["configs"].values()))


def case_numbers(case: dict[str, Any]) -> dict[str, Any]:
    """What the check reports of one bench_step case."""
    peak = case.get("peak_mib")
    out = {
        "s_per_step": case["median_s"],
        "min_s": case["min_s"],
        "cpu_s_per_step": case.get("cpu_median_s"),
        "peak_gb": None if peak is None else peak * 2**20 / 1e9,
        "peak_gib": None if peak is None else peak / 1024,
    }
    if case.get("peak_reserved_mib") is not None:
        out["peak_reserved_gib"] = case["peak_reserved_mib"] / 1024
    for key in ("ratio_sft", "ratio_sft_plus_teacher", "final_loss"):
        if key in case:
            out[key] = case[key]
    if "breakdown_s" in case:
        out["breakdown_s"] = case["breakdown_s"]
    return out


def step_part(part: dict[str, Any]) -> dict[str, Any]:
    config = _config(part.pop("report"))
    cases = {name: case_numbers(case) for name, case in config.get("cases", {}).items()}
    part.update(
        device=config.get("device"),
        samples_per_step=config["batch_size"] * config["grad_accum"] if config else None,
        steps=config.get("steps"),
        partial=bool(config.get("partial")),
        cases=cases,
    )
    evl = cases.get("evl")
    if evl is not None:
        part["paper_table7_evl"] = PAPER_TABLE7_EVL
        part["evl_vs_paper"] = {
            "time_ratio": evl["s_per_step"] / PAPER_TABLE7_EVL["s_per_step"],
            "memory_ratio": None if evl["peak_gb"] is None else evl["peak_gb"] / PAPER_TABLE7_EVL["peak_gb"],
        }
    return part


def losses_part(part: dict[str, Any], step: dict[str, Any]) -> dict[str, Any]:
    report = part.pop("report") or {}
    rows = report.get("rows", [])
    per_term: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["shape"].startswith("B=1,") and row["median_ms"] > per_term.get(row["term"], {}).get("median_ms", -1):
            per_term[row["term"]] = {"shape": row["shape"], "median_ms": row["median_ms"]}
    part.update(device=report.get("device"), dtype=report.get("dtype"), rows=rows, per_sample_ms=per_term)
    if not per_term:
        return part
    per_sample_s = sum(t["median_ms"] for t in per_term.values()) / 1000
    part["terms_per_sample_s"] = per_sample_s
    samples, cases = step.get("samples_per_step"), step.get("cases", {})
    if samples:
        per_step = per_sample_s * samples
        part["terms_per_step_s"] = per_step
        part["target_share"] = LOSS_SHARE_TARGET
        for name in ("sft_trl", "evl"):
            if name in cases:
                part[f"share_of_{name}_step"] = per_step / cases[name]["s_per_step"]
        evl = cases.get("evl", {})
        if "KD terms forward" in evl.get("breakdown_s", {}):
            part["kd_forward_share_in_evl_step"] = evl["breakdown_s"]["KD terms forward"] / evl["s_per_step"]
        if "share_of_sft_trl_step" in part:
            part["meets_target"] = part["share_of_sft_trl_step"] < LOSS_SHARE_TARGET
    return part


def cached_part(part: dict[str, Any], step: dict[str, Any]) -> dict[str, Any]:
    config = _config(part.pop("report"))
    case = config.get("cases", {}).get("evl_cached")
    part.update(device=config.get("device"), cases={})
    if case is None:
        return part
    numbers = case_numbers(case)
    part["cases"]["evl_cached"] = numbers
    part["cache"] = case.get("cache")
    live = step.get("cases", {})
    if "sft_trl" in live:
        part["ratio_sft"] = numbers["s_per_step"] / live["sft_trl"]["s_per_step"]
        part["target_ratio_sft"] = CACHED_SFT_TARGET
        part["meets_target"] = part["ratio_sft"] <= CACHED_SFT_TARGET
    if "evl" in live:
        part["ratio_live"] = numbers["s_per_step"] / live["evl"]["s_per_step"]
        if numbers["peak_gb"] is not None and live["evl"]["peak_gb"]:
            part["peak_ratio_live"] = numbers["peak_gb"] / live["evl"]["peak_gb"]
    return part


def collect(work: Path, mode: str, config: str) -> dict[str, Any]:
    parts = {name: read_part(work, name) for name in PARTS}
    step = step_part(parts["step"])
    result = {
        "mode": mode,
        "config": config,
        "parts": {
            "losses": losses_part(parts["losses"], step),
            "step": step,
            "cached": cached_part(parts["cached"], step),
        },
    }
    result["ok"] = all(part["rc"] == 0 for part in result["parts"].values())
    return result


def _finite(value: Any) -> Any:
    """NaN / inf as ``None``: JSON has no spelling for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def summary_lines(result: dict[str, Any]) -> list[str]:
    parts = result["parts"]
    lines = [f"gpu_check ({result['mode']}, {result['config']}): " + ("every part finished" if result["ok"] else
             "some parts failed: " + ", ".join(n for n, p in parts.items() if p["rc"] != 0))]  # fmt: skip
    for name, case in parts["step"].get("cases", {}).items():
        peak = "n/a" if case["peak_gb"] is None else f"{case['peak_gb']:.1f} GB"
        lines.append(f"  {name}: {case['s_per_step']:.3f} s/step, peak {peak}")
    cached = parts["cached"]
    if "evl_cached" in cached.get("cases", {}):
        case = cached["cases"]["evl_cached"]
        ratios = ", ".join(f"{k} {cached[k]:.2f}" for k in ("ratio_sft", "ratio_live") if k in cached)
        lines.append(f"  evl_cached: {case['s_per_step']:.3f} s/step ({ratios})")
    if "share_of_sft_trl_step" in parts["losses"]:
        lines.append(f"  loss terms: {100 * parts['losses']['share_of_sft_trl_step']:.2f} % of an SFT step")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="the folder the parts wrote to")
    parser.add_argument("--mode", required=True, choices=["gpu", "dry-run"])
    parser.add_argument("--config", required=True, help="the step benchmark's config")
    parser.add_argument("--output", type=Path, required=True, help="the JSON file to write")
    args = parser.parse_args(argv)
    result = _finite(collect(args.work, args.mode, args.config))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2))
    print("\n".join(summary_lines(result)))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
