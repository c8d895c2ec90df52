"""What the archive converters share: errors that name the record, the skip report, rendering, parallel work, output.

A converter turns each archive record into a *task* (plain data: picklable, so it can go to a worker
process), and :func:`run_tasks` runs :func:`convert_task`-style callables over them. A failing record
comes back as a :class:`ConversionError` naming the record and the file; with ``skip_invalid`` it is
counted per reason in the :class:`ConversionReport` (never dropped silently), without it it is raised.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import numpy as np

from evl_kd_trainer.ecg.augment import AugmentConfig, sample_augmentation
from evl_kd_trainer.ecg.layouts import get_layout
from evl_kd_trainer.ecg.render import render_ecg

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
Task = TypeVar("Task")


class ConversionError(ValueError):
    """A record (or file) that could not be converted; ``reason`` is a short key for the report."""

    def __init__(self, reason: str, detail: str, *, record_id: str, source: str) -> None:
        self.reason = reason
        self.record_id = record_id
        self.source = source
        super().__init__(f"{source}: record {record_id}: {detail} [{reason}]")

    def __reduce__(self) -> tuple[Any, ...]:  # keep the keyword-only fields across process boundaries
        return _rebuild_error, (self.reason, str(self), self.record_id, self.source)


def _rebuild_error(reason: str, message: str, record_id: str, source: str) -> ConversionError:
    error = ConversionError.__new__(ConversionError)
    ValueError.__init__(error, message)
    error.reason, error.record_id, error.source = reason, record_id, source
    return error


@dataclass
class ConversionReport:
    """What a conversion wrote and skipped. ``skipped`` counts per reason; ``first_errors`` keeps examples."""

    dataset: str
    source: str
    out_dir: str
    records: Counter = field(default_factory=Counter)
    images: int = 0
    skipped: Counter = field(default_factory=Counter)
    first_errors: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def skip(self, reason: str, message: str, count: int = 1) -> None:
        self.skipped[reason] += count
        examples = self.first_errors.setdefault(reason, [])
        if len(examples) < 5:
            examples.append(message)

    def summary(self) -> str:
        written = ", ".join(f"{split} {self.records[split]}" for split in SPLITS if split in self.records)
        skipped = ", ".join(f"{reason} {count}" for reason, count in sorted(self.skipped.items())) or "none"
        return f"{self.dataset}: {self.images} images, records: {written or 'none'}; skipped: {skipped}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["records"], data["skipped"] = dict(self.records), dict(self.skipped)
        return data


@dataclass(frozen=True)
class RenderSettings:
    """How converters draw their pictures. Augmentation (if any) is for the training split only."""

    layout: str = "3x4"
    dpi: float = 100.0
    size: tuple[int, int] | None = None
    augment_prob: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        get_layout(self.layout)
        if not 0.0 <= self.augment_prob <= 1.0:
            raise ValueError(f"augment_prob must be in [0, 1], got {self.augment_prob}.")

    def render_to_file(
        self,
        signal: np.ndarray,
        sampling_rate: float,
        lead_names: Sequence[str],
        path: str,
        *,
        key: int,
        augment: bool,
        duration: float = 10.0,
    ) -> None:
        """Render and write a PNG; the augmentation is drawn from (``seed``, ``key``), so reruns match."""
        augmentation = None
        if augment and self.augment_prob > 0:
            rng = np.random.default_rng([self.seed, int(key)])
            augmentation = sample_augmentation(AugmentConfig(prob=self.augment_prob), rng)
        image = render_ecg(
            signal,
            sampling_rate,
            lead_names,
            layout=self.layout,
            dpi=self.dpi,
            size=self.size,
            duration=duration,
            augment=augmentation,
        )
        os.makedirs(os.path.dirname(path), exist_ok=True)
        image.save(path, compress_level=1)


# A task's outcome: (split, records) or the error that stopped it.
Outcome = tuple[str, list[dict[str, Any]]] | ConversionError


def run_tasks(
    work: Callable[[Task], Outcome], tasks: Iterable[Task], num_workers: int = 0, chunksize: int = 16
) -> Iterator[Outcome]:
    """Yield ``work(task)`` for every task, in order; ``num_workers > 0`` uses that many processes."""
    if num_workers <= 0:
        yield from map(work, tasks)
        return
    # spawn, not fork: a forked child would share the parent's open HDF5 handles (HDF5 is not fork-safe).
    with ProcessPoolExecutor(max_workers=num_workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(work, tasks, chunksize=chunksize)


def collect(
    outcomes: Iterable[Outcome], report: ConversionReport, skip_invalid: bool
) -> dict[str, list[dict[str, Any]]]:
    """Gather records per split; count (``skip_invalid``) or raise each error."""
    records: dict[str, list[dict[str, Any]]] = {}
    for outcome in outcomes:
        if isinstance(outcome, ConversionError):
            if not skip_invalid:
                raise outcome
            report.skip(outcome.reason, str(outcome))
            continue
        split, items = outcome
        records.setdefault(split, []).extend(items)
        report.images += 1
    return records


def write_outputs(
    out_dir: str, records: dict[str, list[dict[str, Any]]], splits: Sequence[str], report: ConversionReport
) -> ConversionReport:
    """Write ``<split>.json`` for every requested split and ``manifest.json`` (the report); log skips."""
    for split in splits:
        items = records.get(split, [])
        path = os.path.join(out_dir, f"{split}.json")
        _write_json(path, items)
        report.files[split] = path
        report.records[split] = len(items)
    report.files["manifest"] = os.path.join(out_dir, "manifest.json")
    _write_json(report.files["manifest"], report.to_dict())
    if report.num_skipped:
        logger.warning("%s", report.summary())
    return report


def _write_json(path: str, data: Any) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1)
    os.replace(tmp, path)


def check_columns(frame: Any, required: Sequence[str], source: str) -> None:
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; found {list(frame.columns)}.")


def check_splits(splits: Sequence[str]) -> tuple[str, ...]:
    unknown = [split for split in splits if split not in SPLITS]
    if unknown or not splits:
        raise ValueError(f"splits must be a non-empty subset of {SPLITS}, got {list(splits)}.")
    return tuple(splits)
