"""Teacher-cache building: throughput, bytes per sample and per-term error of each compression (issue 13, item 6).

For each method (default: EVL-ECG and ULD, one logit method) and each storage option -- ``fp32``, ``bf16``, ``fp8``
(e4m3, per-token scales), ``pca:R``, and where the method reads them, visual tokens reduced to C weighted centroids
(EVL-ECG) or top-k teacher log-probs instead of states (ULD) -- this builds a cache over the same samples of a
``bench_step.py`` config (``step_configs.py``) and reports:

- build throughput, samples per second of wall clock and of process CPU time (teacher forward, encoding and
  writing the shards; the PCA rows include the extra teacher pass that fits the basis on ``--pca-fit-samples``);
- bytes per sample (shards only; the once-stored files -- teacher config and processor, LM head, PCA basis -- apart)
  and the size extrapolated to ECGInstruct's 1,156,110 samples *at this config's sizes* (the manifest's own report;
  ``--config real-width-shallow`` has the real models' widths and token counts, hence the real per-sample size);
- the stored features' relative RMS error and, for PCA, the retained variance (on the fit sample and on every
  cached row);
- each loss term's error against the live teacher on the same batches: ``|cached - live| / |live|``, mean and max
  over ``--error-batches`` batches, scored with identical student and method weights (``cache_errors.py``).

A warm-up build (not reported) runs first, so lazy initialisation does not fall on the first row. The builds run
one after another in this process (one torch thread by default, as ``bench_step.py``): read the throughput as
ratios between rows on a shared machine.

    python benchmarks/bench_cache.py --config small --json bench_output/cache_small.json
    python benchmarks/bench_cache.py --config real-width-shallow --samples 4 --error-batches 0 --methods evl
    python benchmarks/bench_cache.py --quick --json /tmp/cache_quick.json   # tiny config, seconds (the tests)
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules, also when imported by path

import torch  # noqa: E402
from cache_errors import batch_terms, relative_errors  # noqa: E402
from step_cache import TEACHER_METHODS, cache_run_args  # noqa: E402
from step_configs import CONFIGS, StepConfig, build_student, build_teacher, make_dataset  # noqa: E402

from evl_kd_trainer.methods import get_method  # noqa: E402

ECGINSTRUCT_SAMPLES = 1_156_110


@dataclass(frozen=True)
class Variant:
    """One storage option of a cache: a compression, optionally visual centroids or top-k log-probs."""

    compression: str
    visual_centroids: int = 0
    logits_topk: int = 0

    @property
    def label(self) -> str:
        if self.visual_centroids:
            return f"{self.compression} + {self.visual_centroids} visual centroids"
        if self.logits_topk:
            return f"top-{self.logits_topk} log-probs"
        return self.compression

    @property
    def slug(self) -> str:
        return self.label.replace(" + ", "-").replace(" ", "_").replace(":", "")


def variants_for(method: str, pca_rank: int, centroids: int, topk: int) -> list[Variant]:
    """Every storage option that applies to ``method``: the four compressions, centroids where it reads visual
    tokens, top-k log-probs where it reads only the teacher's logits."""
    from evl_kd_trainer.cache import features_for
    from evl_kd_trainer.testing.method_args import method_args

    args = method_args(kd_method=method)
    variants = [Variant("fp32"), Variant("bf16"), Variant("fp8"), Variant(f"pca:{pca_rank}")]
    if centroids and features_for(method, args).visual:
        variants.append(Variant("bf16", visual_centroids=centroids))
    if topk:
        try:
            features_for(method, args, logits_topk=topk)
        except ValueError:  # the method reads more than the teacher's logits
            pass
        else:
            variants.append(Variant("bf16", logits_topk=topk))
    return variants


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, choices=sorted(CONFIGS), help="default: small (--quick: tiny)")
    parser.add_argument("--methods", default="evl,uld", help=f"comma-separated subset of {','.join(TEACHER_METHODS)}")
    parser.add_argument("--samples", type=int, default=None, help="samples cached per build (default 64, quick 8)")
    parser.add_argument(
        "--error-batches",
        type=int,
        default=None,
        help="batches the per-term error is averaged over (default 4; 0: skip)",
    )
    parser.add_argument("--pca-rank", type=int, default=None, help="R of the pca:R row (default 64, quick 16)")
    parser.add_argument("--pca-fit-samples", type=int, default=64, help="records that fit the PCA basis")
    parser.add_argument("--centroids", type=int, default=None, help="visual centroids row (default 32; 0: none)")
    parser.add_argument(
        "--topk", type=int, default=None, help="top-k log-probs row, logit methods (default 32; 0: none)"
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1; 0 = torch's default)")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny config, 8 samples, 2 error batches")
    parser.add_argument("--json", type=Path, default=None, help="also write every number to this JSON file")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {"config": "tiny" if quick else "small", "samples": 8 if quick else 64, "error_batches": 2 if quick
                else 4, "pca_rank": 16 if quick else 64, "centroids": 4 if quick else 32, "topk": 8 if quick else 32}  # fmt: skip
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(args.methods) - set(TEACHER_METHODS))
    if unknown:
        parser.error(f"unknown or teacher-less method(s) {unknown}; choose from {list(TEACHER_METHODS)}")
    for name in ("samples", "pca_rank", "pca_fit_samples"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    for name in ("error_batches", "centroids", "topk"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0")
    batch = CONFIGS[args.config].batch_size
    if args.error_batches * batch > args.samples:
        parser.error(f"--error-batches {args.error_batches} x batch {batch} exceeds --samples {args.samples}")
    return args


def build_world(config: StepConfig, samples: int, device: torch.device) -> dict[str, Any]:
    student, processor = build_student(config, device)
    teacher, teacher_processor = build_teacher(config, device)
    teacher.eval()
    return {
        "student": student,
        "student_processor": processor,
        "teacher": teacher,
        "teacher_processor": teacher_processor,
        "dataset": make_dataset(config, samples, processor.tokenizer, with_ids=True),
    }


def timed_build(world: dict[str, Any], args: Any, directory: Path, variant: Variant, options: argparse.Namespace):
    """Build one cache; returns the build result and its (wall, CPU) seconds."""
    from evl_kd_trainer.cache import build_teacher_cache

    wall, cpu = time.perf_counter(), time.process_time()
    result = build_teacher_cache(
        directory, world["dataset"], world["teacher"], world["teacher_processor"], args,
        student_processor=world["student_processor"], compression=variant.compression,
        visual_centroids=variant.visual_centroids, logits_topk=variant.logits_topk,
        pca_fit_samples=options.pca_fit_samples, batch_size=args.per_device_eval_batch_size, progress=False,
    )  # fmt: skip
    if args.device.type == "cuda":
        torch.cuda.synchronize(args.device)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def stored_rows(manifest: dict[str, Any]) -> dict[str, float]:
    """Mean stored rows per sample of each stream (the manifest's per-record lengths)."""
    columns = manifest["record_columns"]
    records = list(manifest["records"].values())
    return {
        stream: statistics.fmean(r[columns.index(stream)] for r in records)
        for stream in ("tokens", "hidden", "visual", "topk")
        if records
    }


def measure_variant(
    world: dict[str, Any], method: str, variant: Variant, root: Path, options: argparse.Namespace, live: list | None
) -> dict[str, Any]:
    from evl_kd_trainer.cache.manifest import MANIFEST, read_json

    config, device = options.step_config, options.torch_device
    directory = root / method / variant.slug
    run_args = cache_run_args(method, config, device, str(root / "runs"), per_device_eval_batch_size=config.batch_size)
    result, wall, cpu = timed_build(world, run_args, directory, variant, options)
    manifest = read_json(directory / MANIFEST)
    row: dict[str, Any] = {
        "variant": variant.label,
        "compression": variant.compression,
        "visual_centroids": variant.visual_centroids,
        "logits_topk": variant.logits_topk,
        "records": result.records,
        "build_s": wall,
        "build_cpu_s": cpu,
        "samples_per_s": result.written / wall,
        "samples_per_cpu_s": result.written / cpu,
        **{k: result.size[k] for k in ("bytes_per_sample", "shard_bytes", "shared_bytes", "extrapolated_bytes")},
        "extrapolated_samples": result.size["extrapolated_samples"],
        "rows_per_sample": stored_rows(manifest),
        "stream_errors": result.errors,
        "pca_retained_variance_fit": manifest.get("pca_retained_variance_fit", {}),
    }
    if live:
        cached_args = cache_run_args(
            method, config, device, str(root / "runs"), per_device_eval_batch_size=config.batch_size,
            teacher_cache_dir=str(directory),
        )  # fmt: skip
        cached = batch_terms(world, cached_args, method, len(live))
        row["terms"] = cached
        row["term_errors"] = relative_errors(live, cached)
    shutil.rmtree(directory)
    return row


def _bytes(value: float) -> str:
    from evl_kd_trainer.cache.manifest import human_bytes

    return human_bytes(value)


def _retained(row: dict[str, Any]) -> str:
    kept = [f"{s} {e['retained_variance']:.4f}" for s, e in row["stream_errors"].items() if "retained_variance" in e]
    return ", ".join(kept)


def method_table(method: str, rows: list[dict[str, Any]]) -> str:
    """One method's rows: throughput, size, stored-feature error, per-term error (mean |rel err| over batches)."""
    terms = [t for t in get_method(method).terms if rows and t in rows[0].get("term_errors", {})]
    bf16 = next((r["bytes_per_sample"] for r in rows if r["variant"] == "bf16"), None)
    header = (
        "| storage | samples/s (wall) | samples/s (CPU) | bytes/sample | x bf16 | at 1,156,110 samples | "
        "feature rel. RMS error | PCA retained variance | " + " | ".join(f"{t} rel. err" for t in terms) + " |"
    )
    lines = [header, "|---|" + "---:|" * (7 + len(terms))]
    for r in rows:
        rms = ", ".join(f"{s} {e['relative_rms_error']:.2g}" for s, e in r["stream_errors"].items())
        if not rms:  # measured for fp8 and PCA only; fp32 is exact, bf16 rounds (exact against a bf16 teacher)
            rms = "n/a" if r["logits_topk"] else ("0 (exact)" if r["compression"] == "fp32" else "not measured")
        size_ratio = f"{r['bytes_per_sample'] / bf16:.2f}" if bf16 else ""
        errors = [f"{r['term_errors'][t]['mean_abs_rel']:.1e}" for t in terms]
        lines.append(
            f"| {r['variant']} | {r['samples_per_s']:.1f} | {r['samples_per_cpu_s']:.1f} | "
            f"{r['bytes_per_sample']:,.0f} | {size_ratio} | {_bytes(r['extrapolated_bytes'])} | {rms} | "
            f"{_retained(r)} | " + " | ".join(errors) + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    if options.threads > 0:
        torch.set_num_threads(options.threads)
    wanted = options.device if options.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if wanted == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available.")
    options.torch_device = torch.device(wanted)
    options.step_config = config = CONFIGS[options.config]
    where = (
        torch.cuda.get_device_name() if wanted == "cuda" else f"{platform.machine()}, {torch.get_num_threads()} threads"
    )
    device_text = f"torch {torch.__version__}, {where}, Python {platform.python_version()}"
    print(f"## teacher cache, {config.name} ({device_text})\n\n{config.description}\n")
    print(f"{options.samples} samples per build, batch {config.batch_size}; per-term error over "
          f"{options.error_batches} batches\n", flush=True)  # fmt: skip
    world = build_world(config, options.samples, options.torch_device)
    report: dict[str, Any] = {
        "config": config.name,
        "description": config.description,
        "device": device_text,
        "threads": torch.get_num_threads(),
        "samples": options.samples,
        "batch_size": config.batch_size,
        "error_batches": options.error_batches,
        "pca_fit_samples": options.pca_fit_samples,
        "extrapolated_samples": ECGINSTRUCT_SAMPLES,
        "methods": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench_cache_") as tmp:
        root = Path(tmp)
        warm = Variant("bf16")  # warm-up build (lazy initialisation), not reported
        warm_world = dict(world, dataset=world["dataset"].select(range(min(options.samples, 2 * config.batch_size))))
        run_args = cache_run_args(
            options.methods[0], config, options.torch_device, str(root / "runs"),
            per_device_eval_batch_size=config.batch_size,
        )  # fmt: skip
        timed_build(warm_world, run_args, root / "warmup", warm, options)
        for method in options.methods:
            live = None
            if options.error_batches:
                live_args = cache_run_args(
                    method, config, options.torch_device, str(root / "runs"),
                    per_device_eval_batch_size=config.batch_size,
                )  # fmt: skip
                live = batch_terms(world, live_args, method, options.error_batches)
            rows = []
            for variant in variants_for(method, options.pca_rank, options.centroids, options.topk):
                rows.append(measure_variant(world, method, variant, root, options, live))
                print(f"  {method}, {variant.label}: {rows[-1]['samples_per_s']:.1f} samples/s, "
                      f"{rows[-1]['bytes_per_sample']:,.0f} B/sample", file=sys.stderr, flush=True)  # fmt: skip
            report["methods"][method] = {"live_terms": live, "rows": rows}
            print(f"### {get_method(method).label}\n\n{method_table(method, rows)}\n", flush=True)
    if options.json is not None:
        options.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
