"""The outputs of a comparison: ``comparison.json`` (every number), ``comparison.md`` (one table per split and
metric) and ``comparison.png`` (means with intervals, and differences against the control)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from evl_kd_trainer.compare.collect import SplitFeatures
from evl_kd_trainer.compare.methods import MethodSpec
from evl_kd_trainer.compare.stats import LOWER_IS_BETTER, ComparisonStats
from evl_kd_trainer.eval.report import METRIC_TITLES
from evl_kd_trainer.eval.splits import get_split


def _number(value: Any) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def metric_entry(
    features: SplitFeatures, metric: str, stats: ComparisonStats, methods: Sequence[MethodSpec]
) -> dict[str, Any]:
    """The JSON block of one split and metric."""
    return {
        "split": features.split,
        "split_title": get_split(features.split).title,
        "metric": metric,
        "metric_title": METRIC_TITLES.get(metric, metric),
        "higher_is_better": metric not in LOWER_IS_BETTER,
        "n_questions": len(features.question_ids),
        "dropped_questions": features.dropped,
        "methods": [
            {
                "name": method.name,
                "kd_method": method.kd_method,
                "overrides": dict(method.overrides),
                "per_seed": [_number(value) for value in stats.per_seed[index]],
                "mean": _number(stats.mean[index]),
                "ci": [_number(value) for value in stats.mean_ci[index]],
                **(
                    {}
                    if index == stats.control
                    else {
                        "diff": _number(stats.diff[index]),
                        "diff_ci": [_number(value) for value in stats.diff_ci[index]],
                        "frac_positive": _number(stats.frac_positive[index]),
                    }
                ),
                "undefined_replicates": int(stats.undefined[index]),
            }
            for index, method in enumerate(methods)
        ],
    }


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def _interval(values: Sequence[float | None], signed: bool = False) -> str:
    return f"[{_fmt(values[0], signed)}, {_fmt(values[1], signed)}]"


def markdown(payload: dict[str, Any]) -> str:
    """``comparison.md`` from the JSON payload (so that the two always agree)."""
    level = round(100 * payload["confidence"])
    control = payload["control"]
    seeds = ", ".join(str(seed) for seed in payload["seeds"])
    lines = [
        "# Method comparison",
        "",
        f"`{payload['command']}`",
        "",
        f"Every method trained from the same starting student with seeds {seeds} and scored on the held-out "
        f"split(s); control `{control}`. Wall time {payload['wall_seconds'] / 60:.1f} min "
        f"({payload['runs_executed']} run(s) trained now, {payload['runs_reused']} kept from an earlier call; "
        f"{payload['run_seconds'] / 60:.1f} min of training and scoring in all runs).",
        "",
        f"Mean over seeds with a {level} % interval; Δ: the paired difference against `{control}` (same seed, "
        f"same questions) with its {level} % interval and the share of replicates with Δ > 0. Intervals: percentile "
        f"intervals of {payload['bootstrap']} bootstrap replicates that resample the questions and the seeds with "
        "replacement (one draw shared by all methods).",
    ]
    for entry in payload["results"]:
        better = "higher is better" if entry["higher_is_better"] else "lower is better: Δ > 0 is worse"
        dropped = (
            f", {entry['dropped_questions']} left out (not scored in every run)" if entry["dropped_questions"] else ""
        )
        lines += [
            "",
            f"## {entry['split_title']}: {entry['metric_title']} ({entry['n_questions']} questions{dropped}; {better})",
            "",
            f"| method | kd_method, overrides | mean [{level} % CI] | per seed | Δ vs {control} [{level} % CI] | P(Δ > 0) |",
            "|:---|:---|---:|:---|---:|---:|",
        ]
        for method in entry["methods"]:
            description = ", ".join([method["kd_method"], *(f"{k}={v}" for k, v in method["overrides"].items())])
            per_seed = " / ".join(_fmt(value) for value in method["per_seed"])
            if "diff" in method:
                diff = f"{_fmt(method['diff'], True)} {_interval(method['diff_ci'], True)}"
                share = "n/a" if method["frac_positive"] is None else f"{method['frac_positive']:.3f}"
                name = f"`{method['name']}`"
            else:
                diff, share, name = "—", "—", f"`{method['name']}` (control)"
            lines.append(
                f"| {name} | {description} | {_fmt(method['mean'])} {_interval(method['ci'])} | {per_seed} | {diff} | "
                f"{share} |"
            )
        undefined = [m["name"] for m in entry["methods"] if m["undefined_replicates"]]
        if undefined:
            lines += ["", f"Replicates with an undefined value (left out): {', '.join(undefined)}."]
    return "\n".join(lines) + "\n"


def plot(payload: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """One row per split and metric: each method's mean with its interval, and each method's difference against
    the control with its interval (a line at 0)."""
    import matplotlib

    matplotlib.use("Agg")  # headless: comparisons run on servers
    import matplotlib.pyplot as plt

    results = payload["results"]
    names = [method["name"] for method in results[0]["methods"]] if results else []
    height = 1.5 + 0.42 * max(len(names), 1)
    figure, axes = plt.subplots(len(results) or 1, 2, figsize=(11, height * max(len(results), 1)), squeeze=False)
    for row, entry in zip(axes, results):
        methods = entry["methods"]
        positions = list(range(len(methods)))[::-1]  # first method on top
        _bars(row[0], positions, [m["mean"] for m in methods], [m["ci"] for m in methods], "tab:blue")
        row[0].set_yticks(positions)
        row[0].set_yticklabels([m["name"] for m in methods])
        row[0].set_ylim(-0.6, len(methods) - 0.4)
        row[0].set_xlabel(f"{entry['metric_title']} (mean over seeds, {round(100 * payload['confidence'])} % CI)")
        row[0].set_title(f"{entry['split_title']}: {entry['metric_title']}")
        others = [(p, m) for p, m in zip(positions, methods) if "diff" in m]
        _bars(
            row[1],
            [p for p, _ in others],
            [m["diff"] for _, m in others],
            [m["diff_ci"] for _, m in others],
            "tab:orange",
        )
        row[1].axvline(0.0, color="black", linewidth=0.8)
        row[1].set_yticks(positions)
        row[1].set_yticklabels([m["name"] + ("" if "diff" in m else " (control)") for m in methods])
        row[1].set_ylim(row[0].get_ylim())
        row[1].set_xlabel(
            f"Δ vs {payload['control']} (paired)" + ("" if entry["higher_is_better"] else ", lower is better")
        )
        row[1].set_title(f"difference from the control `{payload['control']}`")
        for axis in row:
            axis.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _bars(
    axis: Any, positions: list[int], values: list[float | None], intervals: list[list[float | None]], color: str
) -> None:
    """Points with asymmetric error bars; undefined values are left out."""
    points = [(p, v, lo, hi) for p, v, (lo, hi) in zip(positions, values, intervals) if None not in (v, lo, hi)]
    if not points:
        return
    ys, xs, lows, highs = zip(*points)
    errors = [[x - lo for x, lo in zip(xs, lows)], [hi - x for x, hi in zip(xs, highs)]]
    axis.errorbar(xs, ys, xerr=errors, fmt="o", color=color, capsize=4)
