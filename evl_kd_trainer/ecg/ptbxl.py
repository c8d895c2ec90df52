"""PTB-XL -> ECGInstruct records and an ECG-Bench-style (ptb-test) superclass split.

Reads the archive as PhysioNet ships it: ``ptbxl_database.csv`` (``ecg_id``, ``scp_codes`` as a dict
literal, ``strat_fold``, ``filename_lr`` / ``filename_hr``), ``scp_statements.csv`` (statement code
in the first column, ``diagnostic`` = 1 for diagnostic statements, ``diagnostic_class`` = superclass)
and the WFDB records at 100 Hz (``records100/``) or 500 Hz (``records500/``).

Labels follow the PTB-XL benchmark: an ECG's superclasses are the ``diagnostic_class`` of its
diagnostic statements, whatever their likelihood (``min_likelihood`` can raise that bar). Folds 1-8
train, 9 validation, 10 test. ECGs with no diagnostic statement have no superclass: they are counted
as skipped (``no_superclass``), like every other record that is left out.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Sequence
from dataclasses import dataclass
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
from evl_kd_trainer.ecg.leads import lead_index
from evl_kd_trainer.ecg.records import (
    PTBXL_MCQ_QUESTION,
    PTBXL_QUESTION,
    PTBXL_SUPERCLASS_NAMES,
    PTBXL_SUPERCLASSES,
    label_records,
)

DATABASE_CSV = "ptbxl_database.csv"
STATEMENTS_CSV = "scp_statements.csv"
FOLD_SPLITS = {**dict.fromkeys(range(1, 9), "train"), 9: "val", 10: "test"}
_UNIT_TO_MV = {"mv": 1.0, "uv": 1e-3, "μv": 1e-3, "v": 1e3}


@dataclass(frozen=True)
class _Task:
    ecg_id: int
    split: str
    labels: tuple[str, ...]
    record_path: str  # WFDB record path without extension
    image: str  # relative to out_dir
    out_dir: str
    sampling_rate: int
    render: RenderSettings
    question_types: tuple[str, ...]


def convert_ptbxl(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    sampling_rate: int = 500,
    splits: Sequence[str] = ("train", "val", "test"),
    layout: str = "3x4",
    dpi: float = 100.0,
    size: tuple[int, int] | None = None,
    augment_prob: float = 0.0,
    seed: int = 0,
    question_types: Sequence[str] = ("closed", "mcq"),
    min_likelihood: float = 0.0,
    limit: int | None = None,
    skip_invalid: bool = False,
    num_workers: int = 0,
) -> ConversionReport:
    """Render PTB-XL records and write ``<split>.json`` + ``manifest.json`` (the report) under ``out_dir``.

    Args:
        root: the PTB-XL folder (holding the two CSV files and ``records100/`` or ``records500/``).
        sampling_rate: 500 (``filename_hr``) or 100 (``filename_lr``).
        splits: which of ``train`` (folds 1-8), ``val`` (9), ``test`` (10) to convert.
        layout, dpi, size: rendering (see :func:`evl_kd_trainer.ecg.render.render_ecg`).
        augment_prob: chance a *training* picture is augmented (seeded by ``seed`` and ``ecg_id``).
        question_types: training/validation questions, ``"closed"`` (answer: superclasses, e.g.
            ``"MI, STTC"``) and ``"mcq"`` (single-superclass ECGs only; answer: a letter). The test
            split always gets one closed-ended record per ECG, like ECG-Bench's ptb-test.
        min_likelihood: keep a diagnostic statement only if its likelihood is at least this.
        limit: convert only the first ``limit`` ECGs (by ``ecg_id``) of the requested splits.
        skip_invalid: count unreadable/bad records in the report instead of raising on the first.
        num_workers: worker processes for reading and rendering (0: in this process).

    Raises:
        FileNotFoundError: a CSV file is missing. ConversionError (a ``ValueError``): a bad record,
        naming ``ecg_id`` and the file (without ``skip_invalid``).
    """
    if sampling_rate not in (100, 500):
        raise ValueError(f"PTB-XL has records at 100 or 500 Hz, not {sampling_rate}.")
    splits = check_splits(splits)
    root, out_dir = os.fspath(root), os.fspath(out_dir)
    settings = RenderSettings(layout=layout, dpi=dpi, size=size, augment_prob=augment_prob, seed=seed)
    report = ConversionReport(dataset="ptbxl", source=root, out_dir=out_dir)
    report.settings = {
        "sampling_rate": sampling_rate,
        "splits": list(splits),
        "render": {"layout": layout, "dpi": None if size else dpi, "size": list(size) if size else None},
        "augment_prob": augment_prob,
        "seed": seed,
        "question_types": list(question_types),
        "min_likelihood": min_likelihood,
        "label_space": list(PTBXL_SUPERCLASSES),
    }

    database = _read_csv(os.path.join(root, DATABASE_CSV))
    filename_column = "filename_hr" if sampling_rate == 500 else "filename_lr"
    check_columns(database, ["ecg_id", "scp_codes", "strat_fold", filename_column], os.path.join(root, DATABASE_CSV))
    superclass_of = _diagnostic_superclasses(os.path.join(root, STATEMENTS_CSV))
    database = database.sort_values("ecg_id")

    tasks = []
    source = os.path.join(root, DATABASE_CSV)
    for row in database.itertuples(index=False):
        if limit is not None and len(tasks) >= limit:
            break
        ecg_id = row.ecg_id
        try:
            split = _split_of(row, source)
            if split not in splits:
                continue
            labels = _labels_of(row, superclass_of, min_likelihood, source)
        except ConversionError as error:
            if not skip_invalid:
                raise
            report.skip(error.reason, str(error))
            continue
        if not labels:
            report.skip("no_superclass", f"{source}: record {ecg_id}: no diagnostic statement")
            continue
        suffix = "hr" if sampling_rate == 500 else "lr"
        tasks.append(
            _Task(
                ecg_id=int(ecg_id),
                split=split,
                labels=labels,
                record_path=os.path.join(root, str(getattr(row, filename_column))),
                image=f"images/ptbxl/{int(ecg_id):05d}_{suffix}-0.png",
                out_dir=out_dir,
                sampling_rate=sampling_rate,
                render=settings,
                question_types=tuple(question_types),
            )
        )

    records = collect(run_tasks(_convert_one, tasks, num_workers), report, skip_invalid)
    return write_outputs(out_dir, records, splits, report)


def _read_csv(path: str) -> pd.DataFrame:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"PTB-XL file not found: {path}")
    return pd.read_csv(path)


def _diagnostic_superclasses(path: str) -> dict[str, str]:
    """Statement code -> superclass, for diagnostic statements with a known superclass."""
    statements = _read_csv(path)
    statements = statements.rename(columns={statements.columns[0]: "code"})
    check_columns(statements, ["diagnostic", "diagnostic_class"], path)
    mapping = {}
    for code, diagnostic, superclass in zip(
        statements["code"], statements["diagnostic"], statements["diagnostic_class"]
    ):
        if pd.notna(diagnostic) and float(diagnostic) == 1.0 and superclass in PTBXL_SUPERCLASSES:
            mapping[str(code)] = str(superclass)
    if not mapping:
        raise ValueError(f"{path}: no diagnostic statement with a superclass among {list(PTBXL_SUPERCLASSES)}.")
    return mapping


def _split_of(row: Any, source: str) -> str:
    fold = row.strat_fold
    try:
        return FOLD_SPLITS[int(fold)]
    except (KeyError, TypeError, ValueError):
        raise ConversionError(
            "bad_fold", f"strat_fold {fold!r} is not 1..10", record_id=str(row.ecg_id), source=source
        ) from None


def _labels_of(row: Any, superclass_of: dict[str, str], min_likelihood: float, source: str) -> tuple[str, ...]:
    text = row.scp_codes
    try:
        codes = ast.literal_eval(text) if isinstance(text, str) else None
    except (ValueError, SyntaxError):
        codes = None
    if not isinstance(codes, dict):
        raise ConversionError(
            "bad_scp_codes",
            f"scp_codes {text!r} is not a dict literal",
            record_id=str(row.ecg_id),
            source=source,
        )
    found = {
        superclass_of[code]
        for code, likelihood in codes.items()
        if code in superclass_of and _at_least(likelihood, min_likelihood)
    }
    return tuple(label for label in PTBXL_SUPERCLASSES if label in found)


def _at_least(likelihood: Any, threshold: float) -> bool:
    try:
        return float(likelihood) >= threshold
    except (TypeError, ValueError):
        return threshold <= 0.0


def _convert_one(task: _Task) -> Outcome:
    """Read one WFDB record, render it, build its records; errors are returned, not raised."""
    import wfdb  # imported here: a worker process only pays for it when it reads records

    label = str(task.ecg_id)
    try:
        signal, fields = wfdb.rdsamp(task.record_path)
    except FileNotFoundError:
        return ConversionError("missing_signal", "WFDB record not found", record_id=label, source=task.record_path)
    except Exception as error:  # wfdb raises many types on corrupt headers/data
        return ConversionError(
            "unreadable_signal", f"{type(error).__name__}: {error}", record_id=label, source=task.record_path
        )
    try:
        signal = _to_millivolts(np.asarray(signal, dtype=np.float64).T, fields.get("units") or [])
        lead_index(fields["sig_name"])
        if fields.get("fs") and abs(float(fields["fs"]) - task.sampling_rate) > 1e-6:
            raise ValueError(f"sampling rate {fields['fs']} Hz, expected {task.sampling_rate} Hz")
        if not np.isfinite(signal).any():
            raise ValueError("the signal has no finite sample")
        task.render.render_to_file(
            signal,
            task.sampling_rate,
            fields["sig_name"],
            os.path.join(task.out_dir, task.image),
            key=task.ecg_id,
            augment=task.split == "train",
            duration=min(10.0, signal.shape[1] / task.sampling_rate),
        )
    except ValueError as error:
        return ConversionError("bad_signal", str(error), record_id=label, source=task.record_path)
    records = label_records(
        f"ptbxl-{task.ecg_id:05d}",
        task.image,
        task.labels,
        split=task.split,
        question=PTBXL_QUESTION,
        order=PTBXL_SUPERCLASSES,
        mcq_question=PTBXL_MCQ_QUESTION,
        mcq_names=PTBXL_SUPERCLASS_NAMES,
        question_types=task.question_types,
    )
    return task.split, records


def _to_millivolts(signal: np.ndarray, units: Sequence[str]) -> np.ndarray:
    """WFDB physical units -> mV (PTB-XL says ``mV``; other spellings are scaled, unknown ones refused)."""
    if not units:
        return signal
    scales = []
    for unit in units:
        scale = _UNIT_TO_MV.get(str(unit).strip().lower())
        if scale is None:
            raise ValueError(f"unknown signal unit {unit!r} (expected mV, uV or V)")
        scales.append(scale)
    return signal * np.asarray(scales)[:, None]
