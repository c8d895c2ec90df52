"""CODE-15% -> ECGInstruct records and an ECG-Bench-style (code15-test) split.

Reads the archive as Zenodo ships it: ``exams.csv`` (``exam_id``, the six label columns ``1dAVb``,
``RBBB``, ``LBBB``, ``SB``, ``ST``, ``AF``, ``normal_ecg``, ``patient_id``, ``trace_file``) and the
``exams_part{k}.hdf5`` files, each holding ``exam_id`` (N,) and ``tracings`` (N, 4096, 12): 400 Hz,
leads DI, DII, DIII, AVR, AVL, AVF, V1-V6, zero-padded on both sides to 4096 samples (10 s or 7 s of
signal). The padding is trimmed before rendering, so a 7-s exam gives a 7-s page.

Units: the dataset's documentation is ambiguous (it says "scale 1e-4 V" and "multiply by 1000 to get
V"); QRS amplitudes in the files look like millivolts, which is the default (``scale=1.0``). Pass
another ``scale`` (multiplier to mV) if your copy differs.

The answer lists the exam's labels in ECG-Bench's order; an exam with none of them is ``NORM`` when
``normal_ecg`` is true (or absent) and ``ABNORMAL`` otherwise, ECG-Bench's two special answers. CODE-15%
has no official split: exams are assigned to test / val / train by a seeded hash of ``patient_id``
(``exam_id`` when absent), so one patient never straddles splits and reruns agree.

HDF5 rows whose ``exam_id`` is 0 with an all-zero tracing are padding and are counted in the report
as ``padding_row``; exams listed in ``exams.csv`` whose ``trace_file`` is not on disk are counted as
``trace_file_missing`` (holding a few parts of the 18 is normal).
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from evl_kd_trainer.ecg.conversion import (
    ConversionError,
    ConversionReport,
    Outcome,
    RenderSettings,
    check_columns,
    check_splits,
    collect,
    run_tasks,
    write_outputs,
)
from evl_kd_trainer.ecg.records import (
    CODE15_ABNORMAL,
    CODE15_LABEL_NAMES,
    CODE15_LABELS,
    CODE15_MCQ_QUESTION,
    CODE15_NORMAL,
    CODE15_QUESTION,
    label_records,
)

EXAMS_CSV = "exams.csv"
SAMPLING_RATE = 400
LEADS = ("DI", "DII", "DIII", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6")
_ANSWER_ORDER = (*CODE15_LABELS, CODE15_NORMAL, CODE15_ABNORMAL)
_MCQ_NAMES = {**CODE15_LABEL_NAMES, CODE15_NORMAL: "normal ECG"}
_TRUE = {"true", "1", "1.0", "yes", "t"}
_FALSE = {"false", "0", "0.0", "no", "f", ""}
_OPEN_FILES: list[Any] = []


@dataclass(frozen=True)
class _Task:
    exam_id: int
    split: str
    labels: tuple[str, ...]
    hdf5_path: str
    row: int
    image: str
    out_dir: str
    scale: float
    render: RenderSettings
    question_types: tuple[str, ...]


def convert_code15(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    test_fraction: float = 0.1,
    val_fraction: float = 0.0,
    splits: Sequence[str] | None = None,
    layout: str = "3x4",
    dpi: float = 100.0,
    size: tuple[int, int] | None = None,
    augment_prob: float = 0.0,
    seed: int = 0,
    scale: float = 1.0,
    question_types: Sequence[str] = ("closed", "mcq"),
    limit: int | None = None,
    skip_invalid: bool = False,
    num_workers: int = 0,
) -> ConversionReport:
    """Render CODE-15% exams and write ``<split>.json`` + ``manifest.json`` (the report) under ``out_dir``.

    Args:
        root: folder holding ``exams.csv`` and the ``exams_part*.hdf5`` files.
        test_fraction, val_fraction: share of patients in the test and validation splits.
        splits: splits to write (default: ``train``, ``test`` and ``val`` when ``val_fraction > 0``).
        layout, dpi, size, augment_prob, seed: rendering, as for :func:`~evl_kd_trainer.ecg.ptbxl.convert_ptbxl`.
        scale: multiplier from the file's values to millivolts.
        question_types: ``"closed"`` and/or ``"mcq"`` (single-label exams) for train/val; the test
            split gets one closed-ended record per exam.
        limit: convert only the first ``limit`` exams found in the HDF5 files (in file order).
        skip_invalid: count bad exams/files in the report instead of raising on the first.
        num_workers: worker processes for reading and rendering (0: in this process).
    """
    if not (0.0 <= test_fraction <= 1.0 and 0.0 <= val_fraction <= 1.0 and test_fraction + val_fraction <= 1.0):
        raise ValueError(
            f"test_fraction and val_fraction must be in [0, 1] and sum to <= 1, got {test_fraction}, {val_fraction}."
        )
    if splits is None:
        splits = ("train", "val", "test") if val_fraction > 0 else ("train", "test")
    splits = check_splits(splits)
    root, out_dir = os.fspath(root), os.fspath(out_dir)
    settings = RenderSettings(layout=layout, dpi=dpi, size=size, augment_prob=augment_prob, seed=seed)
    report = ConversionReport(dataset="code15", source=root, out_dir=out_dir)
    report.settings = {
        "test_fraction": test_fraction,
        "val_fraction": val_fraction,
        "splits": list(splits),
        "render": {"layout": layout, "dpi": None if size else dpi, "size": list(size) if size else None},
        "augment_prob": augment_prob,
        "seed": seed,
        "scale_to_mv": scale,
        "question_types": list(question_types),
        "label_space": list(_ANSWER_ORDER),
    }

    exams_path = os.path.join(root, EXAMS_CSV)
    exams = _read_exams(exams_path)
    hdf5_files = sorted(glob.glob(os.path.join(root, "exams_part*.hdf5")))
    if not hdf5_files:
        raise FileNotFoundError(f"No exams_part*.hdf5 file in {root}.")
    present = {os.path.basename(path) for path in hdf5_files}
    if "trace_file" in exams.columns:
        absent = ~exams["trace_file"].astype(str).isin(present)
        if absent.any():
            examples = exams.loc[absent, "trace_file"].astype(str).unique()[:3].tolist()
            report.skip(
                "trace_file_missing",
                f"{exams_path}: exams whose trace_file is not in {root}, e.g. {examples}",
                int(absent.sum()),
            )
    by_id = exams.set_index("exam_id")
    options = {
        "seed": seed,
        "test_fraction": test_fraction,
        "val_fraction": val_fraction,
        "scale": scale,
        "question_types": question_types,
        "limit": limit,
        "skip_invalid": skip_invalid,
    }

    try:
        tasks = _plan(hdf5_files, by_id, exams_path, splits, report, settings, out_dir, **options)
        records = collect(run_tasks(_convert_one, tasks, num_workers), report, skip_invalid)
    finally:
        _close_all()
    return write_outputs(out_dir, records, splits, report)


def _plan(
    hdf5_files: list[str],
    by_id: pd.DataFrame,
    exams_path: str,
    splits: tuple[str, ...],
    report: ConversionReport,
    settings: RenderSettings,
    out_dir: str,
    *,
    seed: int,
    test_fraction: float,
    val_fraction: float,
    scale: float,
    question_types: Sequence[str],
    limit: int | None,
    skip_invalid: bool,
) -> list[_Task]:
    """One task per exam to convert; padding rows and bad or unknown exams are counted in ``report``."""
    tasks: list[_Task] = []
    seen: set[int] = set()
    for path in hdf5_files:
        try:
            exam_ids = _hdf5_exam_ids(path)
        except ConversionError as error:
            if not skip_invalid:
                raise
            report.skip(error.reason, str(error))
            continue
        for row, exam_id in enumerate(exam_ids):
            if limit is not None and len(tasks) >= limit:
                break
            if exam_id == 0 and _is_padding(path, row):
                report.skip("padding_row", f"{path}: row {row}: exam_id 0 with an all-zero tracing")
                continue
            try:
                if exam_id in seen:
                    raise ConversionError(
                        "duplicate_exam", "exam_id appears twice in the HDF5 files", record_id=str(exam_id), source=path
                    )
                if exam_id not in by_id.index:
                    raise ConversionError(
                        "not_in_exams_csv", f"exam_id not in {exams_path}", record_id=str(exam_id), source=path
                    )
                exam = by_id.loc[exam_id]
                labels = _labels_of(exam, exam_id, exams_path)
            except ConversionError as error:
                if not skip_invalid:
                    raise
                report.skip(error.reason, str(error))
                continue
            seen.add(exam_id)
            split = _split_of(exam, exam_id, seed, test_fraction, val_fraction)
            if split not in splits:
                continue
            tasks.append(
                _Task(
                    exam_id=exam_id,
                    split=split,
                    labels=labels,
                    hdf5_path=path,
                    row=row,
                    image=f"images/code15/{exam_id}-0.png",
                    out_dir=out_dir,
                    scale=scale,
                    render=settings,
                    question_types=tuple(question_types),
                )
            )
    return tasks


def _read_exams(path: str) -> pd.DataFrame:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"CODE-15% file not found: {path}")
    exams = pd.read_csv(path)
    check_columns(exams, ["exam_id", *CODE15_LABELS], path)
    ids = pd.to_numeric(exams["exam_id"], errors="coerce")
    if ids.isna().any():
        bad = exams.loc[ids.isna(), "exam_id"].tolist()[:3]
        raise ValueError(f"{path}: exam_id values that are not integers, e.g. {bad}.")
    exams["exam_id"] = ids.astype(np.int64)
    duplicated = exams["exam_id"].duplicated()
    if duplicated.any():
        raise ValueError(f"{path}: duplicate exam_id(s) {exams.loc[duplicated, 'exam_id'].tolist()[:3]}.")
    return exams


def _flag(value: Any, column: str, exam_id: int, source: str) -> bool:
    text = str(value).strip().lower() if not (isinstance(value, float) and np.isnan(value)) else ""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConversionError(
        "bad_label", f"column {column!r} has {value!r}, not a boolean", record_id=str(exam_id), source=source
    )


def _labels_of(exam: pd.Series, exam_id: int, source: str) -> tuple[str, ...]:
    labels = tuple(label for label in CODE15_LABELS if _flag(exam[label], label, exam_id, source))
    if labels:
        return labels
    normal = _flag(exam["normal_ecg"], "normal_ecg", exam_id, source) if "normal_ecg" in exam.index else True
    return (CODE15_NORMAL,) if normal else (CODE15_ABNORMAL,)


def _split_of(exam: pd.Series, exam_id: int, seed: int, test_fraction: float, val_fraction: float) -> str:
    """Seeded hash of the patient -> [0, 1): test below ``test_fraction``, then val, then train."""
    patient = exam["patient_id"] if "patient_id" in exam.index and pd.notna(exam["patient_id"]) else f"exam{exam_id}"
    digest = hashlib.blake2b(f"{seed}:{patient}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2**64
    if u < test_fraction:
        return "test"
    return "val" if u < test_fraction + val_fraction else "train"


@lru_cache(maxsize=4)
def _open(path: str) -> Any:
    """One read handle per file per process (workers each open their own)."""
    import h5py

    handle = h5py.File(path, "r")
    _OPEN_FILES.append(handle)
    return handle


def _close_all() -> None:
    """Close this process's cached HDF5 handles (the converter's own; workers exit with theirs)."""
    for handle in list(_OPEN_FILES):
        handle.close()
    _OPEN_FILES.clear()
    _open.cache_clear()


def _hdf5_exam_ids(path: str) -> list[int]:
    try:
        handle = _open(path)
        ids, tracings = handle["exam_id"], handle["tracings"]
    except (OSError, KeyError) as error:
        raise ConversionError("bad_file", f"not a CODE-15% HDF5 file ({error})", record_id="*", source=path) from None
    if tracings.ndim != 3 or tracings.shape[2] != len(LEADS) or tracings.shape[0] != ids.shape[0]:
        raise ConversionError(
            "bad_file",
            f"tracings shape {tracings.shape} does not match (N, samples, 12) with N = {ids.shape[0]} exam ids",
            record_id="*",
            source=path,
        )
    return [int(v) for v in np.asarray(ids)]


def _is_padding(path: str, row: int) -> bool:
    return not np.any(np.asarray(_open(path)["tracings"][row]))


def _convert_one(task: _Task) -> Outcome:
    label = str(task.exam_id)
    try:
        tracing = np.asarray(_open(task.hdf5_path)["tracings"][task.row], dtype=np.float64).T * task.scale
    except OSError as error:
        return ConversionError("unreadable_signal", str(error), record_id=label, source=task.hdf5_path)
    nonzero = np.flatnonzero(np.any(tracing != 0, axis=0))
    if nonzero.size == 0:
        return ConversionError("empty_tracing", "the tracing is all zeros", record_id=label, source=task.hdf5_path)
    signal = tracing[:, nonzero[0] : nonzero[-1] + 1]
    if not np.isfinite(signal).all():
        return ConversionError(
            "bad_signal", "the tracing has non-finite values", record_id=label, source=task.hdf5_path
        )
    try:
        task.render.render_to_file(
            signal,
            SAMPLING_RATE,
            LEADS,
            os.path.join(task.out_dir, task.image),
            key=task.exam_id,
            augment=task.split == "train",
            duration=min(10.0, signal.shape[1] / SAMPLING_RATE),
        )
    except ValueError as error:
        return ConversionError("bad_signal", str(error), record_id=label, source=task.hdf5_path)
    records = label_records(
        f"code15-{task.exam_id}",
        task.image,
        task.labels,
        split=task.split,
        question=CODE15_QUESTION,
        order=_ANSWER_ORDER,
        mcq_question=CODE15_MCQ_QUESTION,
        mcq_names=_MCQ_NAMES,
        question_types=task.question_types,
    )
    return task.split, records
