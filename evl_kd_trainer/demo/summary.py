"""The demo's headline numbers in one file, and the README block quoted from it.

``demo_output/summary.json`` holds what a reader compares across machines: wall time per stage and in total, peak
memory, the held-out accuracy of every model and the number of questions. README's demo paragraph is generated from
it (``python examples/demo.py --update_readme``), so the duration and scores README gives are always those of one
measured run.
"""

from __future__ import annotations

import json
import platform
import re
from pathlib import Path
from typing import Any

SUMMARY_NAME = "summary.json"
README_BLOCK = re.compile(r"(<!-- demo-results:start[^>]*-->\n)(.*?)(<!-- demo-results:end -->)", re.DOTALL)


def write_summary(
    out: Path,
    timings: dict[str, float],
    total_s: float,
    peak_gib: float,
    names: dict[str, str],
    n_questions: int,
    chance: float,
    teacher_cache: dict[str, Any] | None = None,
) -> Path:
    """Write ``summary.json`` from the timings and ``eval/results.json`` of a finished demo run."""
    results = json.loads((out / "eval" / "results.json").read_text())["models"]
    accuracy = {}
    for key, name in names.items():
        splits = results.get(name, {}).get("splits", {})
        values = [scores.get("accuracy") for scores in splits.values()]
        accuracy[key] = values[0] if values else None
    summary = {
        "total_s": round(total_s, 1),
        "peak_memory_gib": round(peak_gib, 2),
        "stages_s": {stage: round(seconds, 1) for stage, seconds in timings.items()},
        "accuracy": accuracy,
        "names": names,
        "n_questions": n_questions,
        "chance": chance,
        "machine": f"{platform.machine()}, {_cpu_count()} CPU cores, Python {platform.python_version()}",
    }
    if teacher_cache is not None:
        summary["teacher_cache"] = teacher_cache
    path = out / SUMMARY_NAME
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0


def readme_block(summary: dict[str, Any]) -> str:
    """The README paragraph for one run: duration, memory and scores, with the command that reproduces it."""
    acc = summary["accuracy"]

    def score(key: str) -> str:
        value = acc.get(key)
        return "n/a" if value is None else f"{value:.0f}"

    minutes = summary["total_s"] / 60
    return (
        f"Last measured run (`make demo` on an otherwise idle machine: {summary['machine']}): "
        f"**{minutes:.1f} min**, peak memory {summary['peak_memory_gib']:.2f} GiB. Held-out accuracy "
        f"({summary['n_questions']} questions, chance {summary['chance']:.0f}): teacher {score('teacher')}, "
        f"SFT student {score('sft')}, EVL-ECG student {score('evl')}, SFT control with the same extra steps "
        f"{score('sft_continued')}.{_cache_sentence(summary)} Other machines' floating point can move these by a few points; "
        "`demo_output/summary.json` holds a run's own figures, `demo_output/report.md` its full report.\n"
    )


def _cache_sentence(summary: dict[str, Any]) -> str:
    cache = summary.get("teacher_cache")
    if not cache:
        return ""
    diff = cache["max_abs_loss_diff"]
    agreement = "exactly the live run's losses" if diff == 0 else f"the live run's losses to {diff:.0e}"
    return (
        f" The EVL-ECG run repeated from a teacher-feature cache (teacher run once, {cache['bytes_per_sample']:,} "
        f"bytes per sample) gave {agreement} over its {cache['steps']} logged steps."
    )


def update_readme(readme: Path, summary_path: Path) -> bool:
    """Replace README's demo block with the one of ``summary_path``; False when the README has no block."""
    summary = json.loads(summary_path.read_text())
    text = readme.read_text()
    if not README_BLOCK.search(text):
        return False
    readme.write_text(README_BLOCK.sub(lambda m: m.group(1) + readme_block(summary) + m.group(3), text, count=1))
    return True


def compare_runs_losses(live_run: Path, cached_run: Path, cache_dir: Path) -> dict[str, float | int]:
    """How closely a run from a teacher cache repeated the live-teacher run: the largest difference of any logged
    loss term over the logged steps, and the cache's size per sample (from its manifest)."""

    def logged(run: Path) -> list[dict]:
        history = json.loads((Path(run) / "trainer_state.json").read_text())["log_history"]
        return [entry for entry in history if "ce_loss" in entry]

    live, cached = logged(live_run), logged(cached_run)
    if len(live) != len(cached) or not live:
        raise ValueError(f"{cached_run}: {len(cached)} logged steps, {live_run}: {len(live)}; the runs differ.")
    # Every loss either run logged at a step (the last entry, the run's summary, carries train_loss, not loss).
    diff = max(
        abs(a[key] - b[key])
        for a, b in zip(live, cached, strict=True)
        for key in a
        if key.endswith("loss") and key in b
    )
    size = json.loads((Path(cache_dir) / "manifest.json").read_text()).get("size", {})
    return {
        "max_abs_loss_diff": float(diff),
        "steps": sum("loss" in entry for entry in live),  # the logged steps, not the summary entry
        "bytes_per_sample": int(size.get("bytes_per_sample", 0)),
    }
