"""ECG-Bench evaluation: answer parsing and metrics, record reading, batched generation, reports.

The metrics need neither torch nor a model: :func:`score_ecgbench` scores generated texts against gold
answers; the same metric is an ``evaluate`` module (``evaluate.load(ECGBENCH_METRIC_PATH)``, offline).
``evl-kd evaluate`` (:mod:`evl_kd_trainer.scripts.evaluate`) runs models over the splits and writes the
paper's Table 1.
"""

from __future__ import annotations

import os

from evl_kd_trainer.eval.metrics import ParsedSample, parse_samples, score_ecgbench, scores_from_parsed
from evl_kd_trainer.eval.records import EvalRecord, RecordError, SplitRecords, read_split
from evl_kd_trainer.eval.splits import SPLITS, SplitSpec, get_split, split_names

#: Folder of the ``evaluate`` metric module: ``evaluate.load(ECGBENCH_METRIC_PATH)``.
ECGBENCH_METRIC_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ecgbench_metric")

__all__ = [
    "ECGBENCH_METRIC_PATH",
    "SPLITS",
    "EvalRecord",
    "ParsedSample",
    "RecordError",
    "SplitRecords",
    "SplitSpec",
    "get_split",
    "parse_samples",
    "read_split",
    "score_ecgbench",
    "scores_from_parsed",
    "split_names",
]
