"""Evaluation outputs: results JSON, a markdown table in the layout of the paper's Table 1, a per-class bar
chart, and per-sample predictions (JSONL) to audit the answer parsing.

``results`` everywhere is ``{model display name: {"model_name_or_path": str, "splits": {split: scores}}}``
where ``scores`` is :func:`~evl_kd_trainer.eval.metrics.score_ecgbench`'s dict plus the generation counts
(``hit_max_new_tokens``, ``skipped``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

from evl_kd_trainer.eval.splits import MULTILABEL, SPLITS, get_split

METRIC_TITLES = {"auc": "AUC", "f1": "F1", "hamming_loss": "HL ↓", "accuracy": "Accuracy"}
MAX_CLASSES_PLOTTED = 20


def _json_safe(value: Any) -> Any:
    """NaN/inf become ``null`` (strict JSON has no NaN); tuples and sets become lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_json_safe(item) for item in value]
    return value


def write_json(path: str | os.PathLike[str], payload: Any) -> None:
    """Write ``payload`` as strict, indented JSON (undefined metrics as ``null``)."""
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(_json_safe(payload), handle, indent=2, ensure_ascii=False, allow_nan=False)
        handle.write("\n")


def write_predictions(path: str | os.PathLike[str], rows: Sequence[dict[str, Any]]) -> None:
    """One JSON object per sample (id, prompt, reference, generated text, what was parsed from both, ...)."""
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(_json_safe(row), ensure_ascii=False, allow_nan=False) + "\n")


def _splits_in(results: dict[str, Any]) -> list[str]:
    present = {split for entry in results.values() for split in entry["splits"]}
    return [spec.name for spec in SPLITS if spec.name in present]


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.1f}"


def markdown_table(results: dict[str, Any], *, reference_compat: bool = False) -> str:
    """Table 1's layout: a ``Datasets`` header with each split over its metric columns, a ``Metric`` row, then
    one row per model (x100; ``HL ↓`` lower is better; ``N/A``: split not evaluated for that model; ``n/a``:
    undefined). Notes under the table list unparsed answers, classes left out of the macro AUC / F1,
    generations cut by ``max_new_tokens`` and skipped records."""
    splits = _splits_in(results)
    header = ["Datasets"]
    metric_row = ["Metric"]
    for name in splits:
        spec = get_split(name)
        header += [spec.title] + [""] * (len(spec.metrics) - 1)
        metric_row += [METRIC_TITLES[metric] for metric in spec.metrics]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join([":---"] + [":---:"] * (len(header) - 1)) + "|",
        "| " + " | ".join(metric_row) + " |",
    ]
    for model, entry in results.items():
        row = [model.replace("|", "\\|")]
        for name in splits:
            scores = entry["splits"].get(name)
            metrics = get_split(name).metrics
            row += [_cell(scores.get(metric)) if scores else "N/A" for metric in metrics]
        lines.append("| " + " | ".join(row) + " |")
    mode = (
        "reference-compatible scoring (PULSE's scorer: substring matching, NaN AUC, random guess for unparsed choices)"
        if reference_compat
        else "whole-label matching; single-valued classes left out of the macro AUC; unparsed answers scored wrong"
    )
    notes = [f"Scores x100; {mode}."]
    for model, entry in results.items():
        for name in splits:
            scores = entry["splits"].get(name)
            if scores:
                notes += _notes(model, get_split(name).title, scores)
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {note}" for note in notes) + "\n"


def _notes(model: str, title: str, scores: dict[str, Any]) -> list[str]:
    where = f"{model} / {title} (n={scores.get('n', 0)})"
    notes = []
    if scores.get("error"):
        notes.append(f"{where}: {scores['error']}")
    if scores.get("unparsed"):
        guessed = f", replaced by a random letter: {scores['random_guesses']}" if scores.get("random_guesses") else ""
        notes.append(f"{where}: {scores['unparsed']} answer(s) with nothing parseable{guessed}")
    if scores.get("excluded_classes"):
        notes.append(f"{where}: no AUC (single gold value) for {', '.join(scores['excluded_classes'])}")
    if scores.get("f1_excluded_classes"):
        notes.append(f"{where}: no F1 (no gold or predicted positive) for {', '.join(scores['f1_excluded_classes'])}")
    if scores.get("hit_max_new_tokens"):
        notes.append(f"{where}: {scores['hit_max_new_tokens']} generation(s) stopped at max_new_tokens")
    if scores.get("skipped"):
        notes.append(f"{where}: {scores['skipped']} record(s) skipped (missing or unreadable image)")
    return notes


def _class_order(name: str, per_model: list[dict[str, Any]]) -> list[str]:
    spec = get_split(name)
    seen = {cls for per_class in per_model for cls in per_class}
    if spec.task == MULTILABEL:
        ordered = [cls for cls in spec.classes if cls in seen]
        return ordered + sorted(seen - set(ordered))
    support: dict[str, int] = {}
    for per_class in per_model:
        for cls, values in per_class.items():
            support[cls] = max(support.get(cls, 0), int(values.get("support", 0)))
    return sorted(seen, key=lambda cls: (-support[cls], cls))[:MAX_CLASSES_PLOTTED]


def plot_per_class(results: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """One bar chart per split (rows of one PNG), one bar per model and class: F1 for the multi-label splits,
    accuracy for the others (the ``MAX_CLASSES_PLOTTED`` most frequent classes). Undefined values get no bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    splits = _splits_in(results)
    models = list(results)
    figure, axes = plt.subplots(len(splits) or 1, 1, figsize=(10, 3.4 * max(len(splits), 1)), squeeze=False)
    width = 0.8 / max(len(models), 1)
    for axis, name in zip(axes[:, 0], splits):
        spec = get_split(name)
        metric = "f1" if spec.task == MULTILABEL else "accuracy"
        per_model = [results[model]["splits"].get(name, {}).get("per_class", {}) for model in models]
        classes = _class_order(name, per_model)
        positions = np.arange(len(classes))
        for index, (model, per_class) in enumerate(zip(models, per_model)):
            values = [per_class.get(cls, {}).get(metric) for cls in classes]
            heights = [np.nan if value is None else value for value in values]
            axis.bar(positions + (index - (len(models) - 1) / 2) * width, heights, width, label=model)
        axis.set_xticks(positions)
        axis.set_xticklabels([cls if len(cls) <= 24 else cls[:22] + "…" for cls in classes], rotation=30, ha="right")
        axis.set_ylim(0, 100)
        axis.set_ylabel(f"{'F1' if metric == 'f1' else 'accuracy'} (%)")
        axis.set_title(f"{spec.title}: per-class {'F1' if metric == 'f1' else 'accuracy'}")
        axis.grid(axis="y", alpha=0.3)
    if splits and models:
        # Beside the axes, not over them: inside, the legend covered the bars of the last classes.
        axes[0, 0].legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", borderaxespad=0.0)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
