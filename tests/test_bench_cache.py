"""The cache benchmark (benchmarks/bench_cache.py): a quick run builds every storage option and scores its error."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "bench_cache.py"


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_cache") / "quick.json"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text()), result.stdout


def _rows(report, method):
    return {row["variant"]: row for row in report["methods"][method]["rows"]}


def test_every_storage_option_is_built_and_sized(quick):
    report, _ = quick
    assert set(report["methods"]) == {"evl", "uld"}
    evl, uld = _rows(report, "evl"), _rows(report, "uld")
    # centroids only where the method reads visual tokens, top-k log-probs only for a logits-only method
    assert set(evl) == {"fp32", "bf16", "fp8", "pca:16", "bf16 + 4 visual centroids"}
    assert set(uld) == {"fp32", "bf16", "fp8", "pca:16", "top-8 log-probs"}
    for rows in (evl, uld):
        for name, row in rows.items():
            assert row["records"] == report["samples"] == 8, name
            assert row["samples_per_s"] > 0 and row["samples_per_cpu_s"] > 0, name
            # the manifest's extrapolation: shards per sample x ECGInstruct's records + the once-stored files
            expected = row["bytes_per_sample"] * 1_156_110 + row["shared_bytes"]
            assert row["extrapolated_bytes"] == pytest.approx(expected), name
        # each step down in precision stores fewer bytes per sample
        sizes = [rows[k]["bytes_per_sample"] for k in ("fp32", "bf16", "fp8", "pca:16")]
        assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == 4
    # fewer visual rows with centroids (70 teacher visual tokens -> at most 4)
    assert evl["bf16 + 4 visual centroids"]["rows_per_sample"]["visual"] <= 4 < evl["bf16"]["rows_per_sample"]["visual"]
    # PCA: retained variance of the stored rows, on both of EVL-ECG's streams, in (0, 1]
    for stream in ("hidden", "visual"):
        kept = evl["pca:16"]["stream_errors"][stream]["retained_variance"]
        assert 0 < kept <= 1 + 1e-9
    assert set(uld["pca:16"]["stream_errors"]) == {"hidden"}  # ULD stores no visual tokens


def test_per_term_errors_against_the_live_teacher(quick):
    report, stdout = quick
    for method, terms in (("evl", {"mhca_loss", "rel_loss", "ot_loss"}), ("uld", {"uld_loss"})):
        live = report["methods"][method]["live_terms"]
        assert len(live) == report["error_batches"] == 2
        rows = _rows(report, method)
        for name, row in rows.items():
            assert terms <= set(row["term_errors"]), (method, name)
            for error in row["term_errors"].values():
                assert math.isfinite(error["mean_abs_rel"]) and error["max_abs_rel"] >= error["mean_abs_rel"]
        # fp32 against an fp32 teacher is exact; bf16 rounds the states (relative 2^-8 per element); fp8 2^-4
        for term in terms:
            assert rows["fp32"]["term_errors"][term]["max_abs_rel"] <= 1e-5, (method, term)
            assert rows["bf16"]["term_errors"][term]["max_abs_rel"] <= 5e-3, (method, term)
            assert rows["fp8"]["term_errors"][term]["max_abs_rel"] <= 0.05, (method, term)
    tables = [line for line in stdout.splitlines() if line.startswith("| ")]
    assert any(line.startswith("| pca:16 |") for line in tables)
    assert any("ot_loss rel. err" in line for line in tables) and any("uld_loss rel. err" in line for line in tables)


def test_bad_options_are_refused():
    spec = importlib.util.spec_from_file_location("bench_cache", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_cache", bench)  # its dataclass looks its module up there
    spec.loader.exec_module(bench)
    for argv in (["--methods", "sft"], ["--pca-rank", "0"], ["--quick", "--samples", "2", "--error-batches", "2"]):
        with pytest.raises(SystemExit):
            bench.parse_args(argv)
    assert bench.parse_args(["--quick"]).config == "tiny" and bench.parse_args([]).pca_rank == 64
