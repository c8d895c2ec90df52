"""The training-step benchmark (benchmarks/bench_step.py): a smoke run, its arithmetic, the real-size configs."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from evl_kd_trainer.methods import builtin_method_names

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "bench_step.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_step", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_times_every_method_and_the_references(tmp_path):
    out = tmp_path / "quick.json"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    tiny = report["configs"]["tiny"]
    cases = tiny["cases"]
    # every registered method, the built-in ones at least, beside the references and the peer
    assert set(cases) == {"sft_trl", "teacher_forward", *builtin_method_names(), "gold"}
    assert {"evl", "sft", "uld", "multilevel_ot", "dskd", "emkd"} <= set(cases)
    for name, case in cases.items():
        assert len(case["times_s"]) == 2 and len(case["cpu_times_s"]) == 2, name
        for key in ("median_s", "min_s", "mean_s", "cpu_median_s", "cpu_mean_s"):
            assert math.isfinite(case[key]) and case[key] > 0, (name, key)
        assert case["peak_mib"] is None or case["peak_mib"] > 0, name
        if name != "teacher_forward":
            assert math.isfinite(case["final_loss"]), name
            assert case["breakdown_s"]["backward"] > 0, name
    # the ratio is the step over SFT + teacher forward, per case, on both clocks
    denominator = tiny["sft_plus_teacher_forward_cpu_s"]
    assert denominator == pytest.approx(cases["sft_trl"]["cpu_median_s"] + cases["teacher_forward"]["cpu_median_s"])
    assert cases["evl"]["ratio_sft_plus_teacher_cpu"] == pytest.approx(cases["evl"]["cpu_median_s"] / denominator)
    # the distillation methods and GOLD run the teacher; plain SFT does not
    for name in (*(m for m in builtin_method_names() if m != "sft"), "gold"):
        assert cases[name]["breakdown_s"]["teacher forward"] > 0, name
    assert "teacher forward" not in cases["sft"]["breakdown_s"]
    tokens = cases["teacher_forward"]["tokens_per_sample"]
    assert tokens["teacher"] > tokens["student"] > 0
    table_rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    for label in ("SFT (TRL SFTTrainer)", "teacher forward alone", "EVL-ECG (ours)", "TRL GOLD (ULD, off-policy)"):
        assert any(row.startswith(f"| {label} |") for row in table_rows), label


def test_quick_cached_cases_run_from_a_cache_and_report_their_ratios(tmp_path):
    """`--cached`: each teacher-reading method gets a `<method>_cached` twin trained from a cache built first."""
    out = tmp_path / "cached.json"
    cmd = [sys.executable, str(SCRIPT), "--quick", "--methods", "evl,uld,sft", "--cached", "--json", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    tiny = json.loads(out.read_text())["configs"]["tiny"]
    cases = tiny["cases"]
    # sft reads no teacher: no cached twin
    assert set(cases) == {"sft_trl", "teacher_forward", "evl", "uld", "sft", "evl_cached", "uld_cached"}
    sft_cpu = cases["sft_trl"]["cpu_median_s"]
    for method in ("evl", "uld"):
        cached, live = cases[f"{method}_cached"], cases[method]
        assert len(cached["times_s"]) == 2 and math.isfinite(cached["final_loss"]), method
        # ratios to the plain SFT step and to the live-teacher twin, on both clocks
        assert cached["ratio_sft_cpu"] == pytest.approx(cached["cpu_median_s"] / sft_cpu)
        assert cached["ratio_live_cpu"] == pytest.approx(cached["cpu_median_s"] / live["cpu_median_s"])
        assert cached["ratio_live"] == pytest.approx(cached["median_s"] / live["median_s"])
        # the teacher never ran: its features came from the cache, read in the data loading
        assert "teacher forward" not in cached["breakdown_s"] and "teacher from cache" in cached["breakdown_s"]
        assert cached["breakdown_s"]["KD terms forward"] > 0
        build = cached["cache"]
        assert build["method"] == method and build["compression"] == "bf16"
        assert build["records"] == 3 * 2  # (1 warm-up + 2 timed steps) x batch 2: every sample trained on
        assert build["bytes_per_sample"] > 0 and build["build_s"] > 0
    assert "ratio_live_cpu" not in cases["evl"]
    # EVL-ECG stores its hidden states at every position and the visual tokens; ULD the answer positions only
    assert cases["evl_cached"]["cache"]["bytes_per_sample"] > cases["uld_cached"]["cache"]["bytes_per_sample"]
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("| method | CPU s/step"))
    assert header.rstrip(" |").endswith("x live, CPU | memory x live")
    row = next(line for line in lines if line.startswith("| EVL-ECG (ours), cached teacher |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[-2]) == pytest.approx(cases["evl_cached"]["ratio_live_cpu"], abs=0.006)
    assert float(cells[7]) == pytest.approx(cases["evl_cached"]["ratio_sft_cpu"], abs=0.006)
    assert any(line.startswith("| cache of |") for line in lines)


def test_cached_options_are_checked():
    bench = load_bench()
    with pytest.raises(SystemExit):
        bench.parse_args(["--methods", "sft_cached"])  # sft reads no teacher: nothing to cache
    with pytest.raises(SystemExit):
        bench.parse_args(["--methods", "evl", "--cached", "--cache-compression", "zip"])
    args = bench.parse_args(["--methods", "evl_cached,uld", "--skip-references"])
    assert args.methods == ["uld"] and args.cached_cases == ["evl_cached"]  # a cached case named alone runs alone
    args = bench.parse_args(["--methods", "evl,uld,gold", "--cached"])
    assert args.cached_cases == ["evl_cached", "uld_cached"]


def test_ratios_and_breakdown_arithmetic():
    bench = load_bench()
    cases = {
        "sft_trl": {"median_s": 2.0, "cpu_median_s": 1.0},
        "teacher_forward": {"median_s": 1.0, "cpu_median_s": 0.5},
        "evl": {"median_s": 3.3, "cpu_median_s": 1.8},
    }
    assert bench.add_ratios(cases) == pytest.approx(3.0)
    assert bench.add_ratios(cases, "cpu_median_s", "_cpu") == pytest.approx(1.5)
    assert cases["evl"]["ratio_sft_plus_teacher"] == pytest.approx(1.1)
    assert cases["evl"]["ratio_sft_plus_teacher_cpu"] == pytest.approx(1.2)
    assert cases["evl"]["ratio_sft"] == pytest.approx(1.65)
    assert bench.add_ratios({"evl": {"median_s": 1.0}}) is None  # no reference, no ratio
    cases["evl_cached"] = {"median_s": 2.2, "cpu_median_s": 0.9, "peak_mib": 450.0}
    cases["evl"]["peak_mib"] = 600.0
    bench.add_live_ratios(cases, "cpu_median_s", "_cpu")
    assert cases["evl_cached"]["ratio_live_cpu"] == pytest.approx(0.5)  # 0.9 / 1.8
    assert cases["evl_cached"]["peak_ratio_live"] == pytest.approx(0.75)
    assert "ratio_live_cpu" not in cases["evl"] and "ratio_live_cpu" not in cases["sft_trl"]

    from step_cases import breakdown

    parts = breakdown({"loss forward": 10.0, "teacher forward": 4.0, "KD terms forward": 2.0, "backward": 6.0}, 2)
    assert parts["student forward (+ CE)"] == pytest.approx(2.0)  # (10 - 4 - 2) / 2 steps
    assert parts["backward"] == pytest.approx(3.0)


def test_gpu_full_config_has_the_papers_model_sizes_and_token_counts(tmp_path):
    bench = load_bench()
    out = tmp_path / "dry.json"
    assert bench.main(["--config", "gpu-full", "--dry-run", "--json", str(out)]) == 0
    info = json.loads(out.read_text())["configs"]["gpu-full"]["dry_run"]
    # Qwen3-VL-2B-Instruct is 2.13B parameters, llava-v1.6-vicuna-7b 7.06B
    assert info["student_parameters"] == pytest.approx(2.128e9, rel=2e-3)
    assert info["teacher_parameters"] == pytest.approx(7.063e9, rel=2e-3)
    # 672 x 672 ECG: 49 student tokens at 50176 max pixels; PULSE's flat packing of the base crop and a 2x2 grid
    # of 336-px crops, 576 tokens each (no unpadding, no newline tokens)
    assert info["student_visual_tokens"] == [49, 49]
    assert info["teacher_visual_tokens"] == [5 * 576, 5 * 576]
    assert all(n <= 4096 for n in info["student_tokens"] + info["teacher_tokens"])
    assert info["teacher_class"] == "LlavaNextFlatForConditionalGeneration"
    assert (info["student_vocab_size"], info["teacher_vocab_size"]) == (151936, 32001)
    # one dtype per model: fp32 master weights for the student (bf16 autocast), the teacher in bf16
    assert (info["student_dtypes"], info["teacher_dtypes"]) == (["float32"], ["bfloat16"])


# PULSE-7B's config.json (original LLaVA's llava_llama format), the fields the converter reads.
PULSE_CONFIG = {
    "model_type": "llava_llama",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0,
    "hidden_act": "silu",
    "vocab_size": 32000,
    "tie_word_embeddings": False,
    "mm_vision_tower": "openai/clip-vit-large-patch14-336",
    "mm_hidden_size": 1024,
    "mm_projector_type": "mlp2x_gelu",
    "mm_vision_select_layer": -2,
    "mm_vision_select_feature": "patch",
    "image_aspect_ratio": "anyres",
    "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
    "mm_use_im_start_end": False,
}


def test_gpu_full_teacher_is_pulse_as_the_converter_configures_it(tmp_path):
    from evl_kd_trainer.convert.llava_config import (
        build_llava_next_config,
        build_text_config,
        read_llava_config,
        resolve_vision_config,
    )

    load_bench()  # puts benchmarks/ on sys.path
    from step_configs import CONFIGS, build_teacher

    (tmp_path / "config.json").write_text(json.dumps(PULSE_CONFIG))
    source = read_llava_config(tmp_path)
    # the converter adds <image> (32000) and pads with <unk>: 32001 rows
    converted = build_llava_next_config(
        source, build_text_config(source, 32001, 0), resolve_vision_config(source, None), 32000
    )
    teacher, processor = build_teacher(CONFIGS["gpu-full"], "meta")
    config = teacher.config
    assert type(teacher).__name__ == "LlavaNextFlatForConditionalGeneration" and teacher.model.image_newline is None
    assert type(processor).__name__ == "LlavaNextFlatProcessor"
    for key in (
        "mm_patch_merge_type",
        "image_grid_pinpoints",
        "vision_feature_layer",
        "vision_feature_select_strategy",
        "projector_hidden_act",
        "multimodal_projector_bias",
        "image_seq_length",
        "tie_word_embeddings",
    ):
        assert getattr(config, key) == getattr(converted, key), key
    for part in ("text_config", "vision_config"):
        ours, theirs = getattr(config, part), getattr(converted, part)
        for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
            assert getattr(ours, key, None) == getattr(theirs, key, None), (part, key)
    for key in ("num_key_value_heads", "rms_norm_eps", "max_position_embeddings", "hidden_act"):
        assert getattr(config.text_config, key) == getattr(converted.text_config, key), key
    for key in ("image_size", "patch_size", "hidden_act", "projection_dim"):
        assert getattr(config.vision_config, key) == getattr(converted.vision_config, key), key
    assert processor.image_processor.image_grid_pinpoints == converted.image_grid_pinpoints
    assert len(converted.image_grid_pinpoints) == 5


def test_real_width_shallow_config_keeps_the_widths_with_two_decoder_layers(tmp_path):
    bench = load_bench()
    out = tmp_path / "dry.json"
    assert bench.main(["--config", "real-width-shallow", "--dry-run", "--json", str(out)]) == 0
    info = json.loads(out.read_text())["configs"]["real-width-shallow"]["dry_run"]
    assert (info["student_decoder_layers"], info["teacher_decoder_layers"]) == (2, 2)
    assert (info["student_vocab_size"], info["teacher_vocab_size"]) == (151936, 32001)
    assert info["teacher_class"] == "LlavaNextFlatForConditionalGeneration"
    assert (info["student_visual_tokens"], info["teacher_visual_tokens"]) == ([49], [2880])
    assert (info["student_dtypes"], info["teacher_dtypes"]) == (["float32"], ["bfloat16"])
    # full-depth vision towers and real-width embeddings / LM heads: 0.82B student, 0.99B teacher parameters
    assert info["student_parameters"] == pytest.approx(0.819e9, rel=5e-3)
    assert info["teacher_parameters"] == pytest.approx(0.991e9, rel=5e-3)


def test_bad_method_is_refused():
    bench = load_bench()
    with pytest.raises(SystemExit):
        bench.parse_args(["--methods", "evl,nope"])


@pytest.mark.slow
def test_interleaved_isolated_run_gives_each_process_its_own_steps(tmp_path):
    out = tmp_path / "interleaved.json"
    cmd = [sys.executable, str(SCRIPT), "--config", "tiny", "--methods", "evl", "--steps", "2", "--warmup", "1"]
    cmd += ["--cached"]  # the cache is built in its own process first, then read by its own worker
    result = subprocess.run([*cmd, "--json", str(out)], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    tiny = json.loads(out.read_text())["configs"]["tiny"]
    assert tiny["isolated"] and tiny["interleaved"]
    assert set(tiny["cases"]) == {"sft_trl", "teacher_forward", "evl", "evl_cached"}
    assert tiny["cases"]["evl_cached"]["cache"]["records"] == 3 * 2
    assert tiny["cases"]["evl_cached"]["peak_ratio_live"] > 0
    for name, case in tiny["cases"].items():
        # the turn-taking protocol ran to the end: every worker reported its two timed steps and its own memory
        assert len(case["times_s"]) == 2 and all(t > 0 for t in case["times_s"]), name
        assert case["peak_mib"] >= case["before_mib"] > 0, name


def test_logits_benchmark_quick_smoke_run(tmp_path):
    """`bench_logits.py --quick`: both modes run and report (no timing is asserted)."""
    out = tmp_path / "logits.json"
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_logits.py"
    cmd = [sys.executable, str(script), "--quick", "--repeats", "1", "--json", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    rows = json.loads(out.read_text())
    assert [row["mode"] for row in rows] == ["full", "positions"]
    assert all(row["median_s"] > 0 for row in rows)
