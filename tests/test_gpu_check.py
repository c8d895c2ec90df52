"""benchmarks/gpu_check.sh: its --dry-run (CPU, tiny config) writes one JSON with every part, and the collector
reports a part that failed or timed out instead of losing the others."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def _finite_positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_dry_run_writes_every_part_with_finite_numbers(tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=REPO,
        env=env,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["mode"] == "dry-run" and report["config"] == "tiny" and report["ok"]
    parts = report["parts"]
    assert set(parts) == {"losses", "step", "cached"}
    for name, part in parts.items():
        assert part["rc"] == 0 and not part["timed_out"] and _finite_positive(part["elapsed_s"]), name

    losses = parts["losses"]
    assert losses["dtype"] == "bfloat16"
    assert set(losses["per_sample_ms"]) == {"OT (sinkhorn_ot)", "MHCA (aligner + mhca)", "relational"}
    for key in ("terms_per_sample_s", "terms_per_step_s", "share_of_sft_trl_step", "share_of_evl_step"):
        assert _finite_positive(losses[key]), key
    assert losses["terms_per_step_s"] == pytest.approx(losses["terms_per_sample_s"] * parts["step"]["samples_per_step"])

    step = parts["step"]
    assert set(step["cases"]) == {"sft_trl", "teacher_forward", "evl"} and not step["partial"]
    for name, case in step["cases"].items():
        assert _finite_positive(case["s_per_step"]) and _finite_positive(case["peak_gb"]), name
    assert step["paper_table7_evl"]["s_per_step"] == 8.54 and step["paper_table7_evl"]["peak_gb"] == 56.4
    assert step["evl_vs_paper"]["time_ratio"] == pytest.approx(step["cases"]["evl"]["s_per_step"] / 8.54)

    cached = parts["cached"]
    assert set(cached["cases"]) == {"evl_cached"}  # the references came from the step part
    case = cached["cases"]["evl_cached"]
    assert _finite_positive(case["s_per_step"]) and _finite_positive(case["peak_gb"])
    for key in ("ratio_sft", "ratio_live", "peak_ratio_live"):
        assert _finite_positive(cached[key]), key
    assert cached["ratio_live"] == pytest.approx(case["s_per_step"] / step["cases"]["evl"]["s_per_step"])
    build = cached["cache"]
    assert build["records"] == 2 * 2  # (1 warm-up + 1 timed step) x batch 2
    assert _finite_positive(build["samples_per_s"]) and _finite_positive(build["bytes_per_sample"])


def _collector():
    spec = importlib.util.spec_from_file_location("gpu_check_collect", REPO / "benchmarks" / "gpu_check_collect.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_timed_out_part_is_reported_and_the_others_kept(tmp_path):
    collect = _collector()
    losses = {"device": "cpu", "dtype": "bfloat16", "rows": [
        {"term": "OT (sinkhorn_ot)", "shape": "B=1, N=4", "median_ms": 10.0, "min_ms": 9.0, "peak_mib": 1.0},
        {"term": "OT (sinkhorn_ot)", "shape": "B=1, N=4, clustered", "median_ms": 20.0, "min_ms": 19.0, "peak_mib": 1.0},
        {"term": "OT (sinkhorn_ot)", "shape": "B=4, N=4", "median_ms": 90.0, "min_ms": 80.0, "peak_mib": 1.0},
        {"term": "relational", "shape": "B=1, L=8", "median_ms": 5.0, "min_ms": 5.0, "peak_mib": 1.0},
    ]}  # fmt: skip
    case = {"median_s": 2.0, "min_s": 1.9, "cpu_median_s": 2.0, "peak_mib": 1024.0}
    step = {"configs": {"gpu-full": {"batch_size": 2, "grad_accum": 24, "steps": 2, "device": "x",
                                     "cases": {"sft_trl": case, "evl": {**case, "median_s": 4.0}}}}}  # fmt: skip
    (tmp_path / "losses.json").write_text(json.dumps(losses))
    (tmp_path / "losses.status").write_text("0 1500")
    (tmp_path / "step.json").write_text(json.dumps(step))
    (tmp_path / "step.status").write_text("0 90000")
    (tmp_path / "cached.status").write_text("124 170000")  # killed by its timeout, no JSON left
    (tmp_path / "cached.log").write_text("building caches...\n")
    out = tmp_path / "gpu.json"
    code = collect.main(["--work", str(tmp_path), "--mode", "gpu", "--config", "gpu-full", "--output", str(out)])
    report = json.loads(out.read_text())
    assert code == 1 and not report["ok"]
    cached = report["parts"]["cached"]
    assert cached["rc"] == 124 and cached["timed_out"] and "building caches" in cached["log_tail"]
    assert cached["cases"] == {}
    losses = report["parts"]["losses"]
    # per term the slowest batch-1 row (the clustered OT), summed: 25 ms per sample, x 48 samples per step
    assert losses["terms_per_sample_s"] == pytest.approx(0.025)
    assert losses["share_of_sft_trl_step"] == pytest.approx(0.025 * 48 / 2.0)
    assert losses["meets_target"] is False
    evl = report["parts"]["step"]["cases"]["evl"]
    assert evl["peak_gib"] == pytest.approx(1.0) and evl["peak_gb"] == pytest.approx(2**30 / 1e9)
    assert report["parts"]["step"]["evl_vs_paper"]["time_ratio"] == pytest.approx(4.0 / 8.54)
