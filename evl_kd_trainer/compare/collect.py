"""Per-question results of finished runs -> aligned feature arrays for :mod:`evl_kd_trainer.compare.stats`.

Each run's evaluation writes ``predictions/<model>/<split>.jsonl``, one row per scored question with what was
parsed from the answer (``correct`` for accuracy splits; the parsed label sets for multi-label splits). Questions
are matched across runs by their record id (repeated ids by their order of appearance); a question that some run
did not score (an image skipped for one model only) is left out of every run, and counted.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evl_kd_trainer.compare.stats import accuracy_features, multilabel_features
from evl_kd_trainer.eval.splits import MULTILABEL, get_split


@dataclass(frozen=True)
class SplitFeatures:
    """One split, every run: ``features[metric]`` is ``(methods, seeds, questions, ...)``."""

    split: str
    metrics: tuple[str, ...]
    features: dict[str, np.ndarray]
    question_ids: list[str]
    dropped: int


def read_rows(path: str | Path) -> dict[str, dict[str, Any]]:
    """The rows of one predictions JSONL keyed by question (``id``, ``id#2`` for its second occurrence, ...)."""
    rows: dict[str, dict[str, Any]] = {}
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            row = json.loads(line)
            base = str(row["id"])
            seen[base] = seen.get(base, 0) + 1
            rows[base if seen[base] == 1 else f"{base}#{seen[base]}"] = row
    return rows


def _indicators(label_sets: Sequence[Sequence[str]], classes: Sequence[str]) -> np.ndarray:
    return np.array([[cls in set(labels or ()) for cls in classes] for labels in label_sets], dtype=bool).reshape(
        len(label_sets), len(classes)
    )


def split_features(split: str, rows: Sequence[Sequence[dict[str, dict[str, Any]]]]) -> SplitFeatures:
    """``rows[m][s]``: the keyed rows of method ``m``, seed ``s`` on ``split`` (see :func:`read_rows`)."""
    spec = get_split(split)
    runs = [run for per_method in rows for run in per_method]
    first = list(runs[0])
    common = [key for key in first if all(key in run for run in runs[1:])]
    dropped = len(set().union(*(set(run) for run in runs)) - set(common))
    if not common:
        raise ValueError(f"{spec.name}: no question was scored in every run")
    shape = (len(rows), len(rows[0]))
    if spec.task == MULTILABEL:
        gold = np.stack([_indicators([run[key]["parsed_reference"] for key in common], spec.classes) for run in runs])
        pred = np.stack([_indicators([run[key]["parsed_prediction"] for key in common], spec.classes) for run in runs])
        counts = multilabel_features(gold, pred).reshape(*shape, *gold.shape[1:], 4)
        features = {metric: counts for metric in spec.metrics}
    else:
        correct = np.array([[bool(run[key]["correct"]) for key in common] for run in runs]).reshape(*shape, len(common))
        features = {metric: accuracy_features(correct) for metric in spec.metrics}
    return SplitFeatures(spec.name, spec.metrics, features, common, dropped)
