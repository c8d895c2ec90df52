"""``demo_output/report.md``: what ran, the held-out scores against chance, and the pictures."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def _accuracy(results: dict[str, Any], model: str) -> float | None:
    scores = results.get(model, {}).get("splits", {}).get("synthetic", {})
    return scores.get("accuracy")


def verdicts(
    results: dict[str, Any], chance: float, teacher: str, sft: str, evl: str, sft_continued: str | None
) -> list[str]:
    """Plain sentences on what the numbers say, whichever way they go."""
    lines = []
    teacher_acc = _accuracy(results, teacher)
    if teacher_acc is not None:
        above = teacher_acc - chance
        state = "clearly above" if above >= 15 else ("above" if above > 0 else "NOT above")
        lines.append(f"- The teacher scores {teacher_acc:.1f} on the held-out split, {state} chance ({chance:.1f}).")
    sft_acc, evl_acc = _accuracy(results, sft), _accuracy(results, evl)
    if sft_acc is not None and evl_acc is not None:
        diff = evl_acc - sft_acc
        word = "better than" if diff > 0 else ("the same as" if diff == 0 else "worse than")
        lines.append(
            f"- The EVL-ECG student ({evl_acc:.1f}) does {word} the SFT student it started from ({sft_acc:.1f}), "
            f"a difference of {diff:+.1f} points."
        )
    if sft_continued is not None:
        cont = _accuracy(results, sft_continued)
        if cont is not None and teacher_acc is not None:
            gap = teacher_acc - cont
            room = "room for distillation" if gap >= 10 else "little to distil: the student learns as much alone"
            lines.append(
                f"- The teacher is {gap:+.1f} points from what the student reaches alone with the same extra steps "
                f"(the SFT control): {room}."
            )
        if cont is not None and evl_acc is not None:
            diff = evl_acc - cont
            word = "beats" if diff > 0 else ("ties" if diff == 0 else "loses to")
            lines.append(
                f"- With the same extra training steps and plain cross-entropy, the student reaches {cont:.1f}: "
                f"distillation {word} it by {abs(diff):.1f} points. This is the fair comparison: both runs continue from "
                "the same SFT student for the same steps and data."
            )
    n = results and next(iter(results.values()))["splits"]["synthetic"].get("n")
    if isinstance(n, int) and n > 0 and evl_acc is not None:
        error = 100 * math.sqrt(evl_acc / 100 * (1 - evl_acc / 100) / n)
        lines.append(
            f"- {n} held-out questions: one run's score has a binomial standard error of about {error:.1f} points, "
            "and another seed moves it more: read a difference of a few points between single runs as noise."
        )
    else:
        lines.append("- Differences of a few points between single runs are within noise.")
    return lines


def _train_results(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "train_results.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _last_terms(run_dir: Path) -> dict[str, float]:
    """The last logged value of every ``*_loss`` term of a run (its ``trainer_state.json``)."""
    path = run_dir / "trainer_state.json"
    if not path.is_file():
        return {}
    terms: dict[str, float] = {}
    for entry in json.loads(path.read_text())["log_history"]:
        terms.update({k: v for k, v in entry.items() if k.endswith("_loss") and k != "train_loss"})
    return terms


def comparison_table(results: dict[str, Any], runs: dict[str, tuple[str, str | Path]]) -> str:
    """Markdown table of the distillation runs side by side: held-out accuracy, seconds per step and each
    method's own last logged terms. ``runs`` maps a method name to ``(model name in results, run folder)``."""
    lines = [
        "| method | accuracy | s/step | last logged terms |",
        "|---|---:|---:|---|",
    ]
    for method, (model_name, run_dir) in runs.items():
        accuracy = _accuracy(results, model_name)
        train = _train_results(Path(run_dir))
        steps_per_second = train.get("train_steps_per_second")
        seconds = f"{1.0 / steps_per_second:.3f}" if steps_per_second else "n/a"
        terms = ", ".join(f"{k} {v:.3g}" for k, v in sorted(_last_terms(Path(run_dir)).items()) if k != "loss")
        acc = f"{accuracy:.1f}" if accuracy is not None else "n/a"
        lines.append(f"| `{method}` | {acc} | {seconds} | {terms or 'none'} |")
    return "\n".join(lines)


def write_report(
    out_dir: str | Path,
    *,
    settings: dict[str, Any],
    timings: dict[str, float],
    eval_dir: str | Path,
    names: dict[str, str],
    chance: float,
    figures: dict[str, str],
    comparison: str | None = None,
) -> Path:
    """Assemble ``report.md`` from the evaluation outputs and the figure files (paths relative to ``out_dir``)."""
    out_dir, eval_dir = Path(out_dir), Path(eval_dir)
    results = json.loads((eval_dir / "results.json").read_text())["models"]
    table = (eval_dir / "results.md").read_text().strip()
    lines = [
        "# evl_kd_trainer demo: EVL-ECG distillation on synthetic ECGs",
        "",
        "Everything here ran on CPU with no network: tiny random models built from configs, synthetic 12-lead",
        "ECGs rendered as rhythm strips, the real example scripts driven by the recipes in `recipes/demo/`.",
        "",
        "## Setup",
        "",
        *(f"- {key}: {value}" for key, value in settings.items()),
        "",
        "## Results on the held-out split (accuracy x100)",
        "",
        table,
        "",
        f"Chance level: {chance:.1f} (uniform guess among the options).",
        "",
        *verdicts(results, chance, names["teacher"], names["sft"], names["evl"], names.get("sft_continued")),
        "",
    ]
    if comparison:
        lines += ["## Baseline methods (same steps, same data)", "", comparison, ""]
    lines += [
        "## Training curves",
        "",
        f"![per-term losses]({figures['loss_curves']})",
        "",
        "## Sinkhorn transport plan of one held-out sample (paper Figure 2)",
        "",
        "Rows: the teacher's visual tokens (flat LLaVA-NeXT packing: base crop, then the anyres crops) after the",
        "trained projector; columns: the student's visual tokens. Each row sums to 1 after normalisation.",
        "",
        f"![transport plan]({figures['transport_plan']})",
        "",
        "## Feature spectra (paper Figure 3)",
        "",
        f"![singular values]({figures['spectra']})",
        "",
        "## Per-class accuracy",
        "",
        f"![per class]({figures['per_class']})",
        "",
        "## Time per stage (seconds)",
        "",
        "| stage | seconds |",
        "|---|---|",
        *(f"| {stage} | {seconds:.0f} |" for stage, seconds in timings.items()),
        "",
    ]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
