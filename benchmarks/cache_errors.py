"""Per-term error of training from a (compressed) teacher cache, against the live teacher, on the same batches.

The same student (a copy per trainer) and the same method modules (seeded identically before each trainer is
built) score the same batches twice: once with the live teacher, once from the cache. Scoring is
``trainer.evaluate`` on one batch at a time (``eval_<term>`` in its metrics: no optimizer step, so the weights are
the same for every batch and both trainers, and the only difference left is the teacher's features). Each term's
error on a batch is ``|cached - live| / |live|``; the benchmark reports its mean (and max) over the batches.
"""

from __future__ import annotations

import copy
import statistics
from typing import Any

import torch

from evl_kd_trainer.methods import get_method


def _trainer(world: dict[str, Any], args: Any) -> Any:
    from transformers import PrinterCallback

    from evl_kd_trainer.trainer import EVLDistillTrainer

    torch.manual_seed(0)  # the method's modules (aligners, projectors) start from the same weights in every trainer
    trainer = EVLDistillTrainer(
        copy.deepcopy(world["student"]),
        teacher_model=world["teacher"],  # with a cache: only fingerprinted (its weights are hashed), never run
        args=args,
        train_dataset=world["dataset"],
        processing_class=world["student_processor"],
        teacher_processing_class=world["teacher_processor"],
    )
    trainer.remove_callback(PrinterCallback)  # one metrics line per scored batch would drown the tables
    return trainer


def batch_terms(world: dict[str, Any], args: Any, method: str, batches: int) -> list[dict[str, float]]:
    """Each of the first ``batches`` batches' loss terms (``ce_loss`` and the method's own) under ``args``."""
    trainer = _trainer(world, args)
    size = args.per_device_eval_batch_size
    names = ("ce_loss", *get_method(method).terms)
    rows = []
    for b in range(batches):
        metrics = trainer.evaluate(eval_dataset=world["dataset"].select(range(b * size, (b + 1) * size)))
        rows.append({name: float(metrics[f"eval_{name}"]) for name in names if f"eval_{name}" in metrics})
    return rows


def relative_errors(live: list[dict[str, float]], cached: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Per term: the mean and max over batches of ``|cached - live| / |live|`` (the absolute error where live is 0)."""
    out = {}
    for term in live[0]:
        errors = [abs(c[term] - v[term]) / (abs(v[term]) or 1.0) for v, c in zip(live, cached, strict=True)]
        out[term] = {"mean_abs_rel": statistics.fmean(errors), "max_abs_rel": max(errors)}
    return out
