"""Reading ECG-Bench-style test records: parquet (Hugging Face's ECGBench layout) or LLaVA JSON / JSONL.

A record is ``{"id", "image", "conversations": [{"from": "human", "value": question}, {"from": "gpt",
"value": answer}]}``. In parquet ``image`` is usually an embedded ``{"bytes", "path"}`` struct; in JSON it is
a path relative to ``image_root`` (default: the file's folder). The question may or may not contain the
``<image>`` placeholder (ECG-Bench's questions do not: PULSE's evaluation puts the image first).

Both published forms of a turn are read. PULSE's JSON files hold the question as a string (and ECG-QA's gold
answer as a list of options); the Hugging Face ``PULSE-ECG/ECGBench`` parquet files type ``value`` as a list of
strings in the ``ecgqa-test`` config, for the question too. A question given as a list is joined with ``""``,
as ECG-Bench's own loader of those files does (``willxxy/ECG-Bench``, ``ecg_bench/pulse_dataset.py``): a
one-element list is the question itself. A gold answer given as a list stays a list (that loader joins it too):
it is ECG-QA's set of options, which PULSE's reference scorer compares as a set, so ``["yes", "no"]`` must not
become ``"yesno"``.

Everything is checked here, before any model loads: the file exists and has the columns, each record has a
human question and a gpt answer, and each image path exists (``missing_images="skip"`` skips and reports
such records instead of failing). Images are decoded later, batch by batch, during generation.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

REQUIRED_COLUMNS = ("id", "image", "conversations")
MISSING_IMAGE_POLICIES = ("error", "skip")
_PARQUET_BATCH_ROWS = 256


class RecordError(ValueError):
    """A record (or file) that cannot be evaluated; the message names the file and the record."""


@dataclass
class EvalRecord:
    """One test question: ``prompt`` is the human turn's text, ``reference`` the gpt turn's value (a string;
    ECG-QA files may hold a list), ``image`` a path, a ``{"bytes", "path"}`` dict or ``None``."""

    id: str
    prompt: str
    reference: Any
    image: Any
    source: str
    index: int


@dataclass
class SplitRecords:
    """The records of one file, plus those skipped for a missing image (``(id, reason)`` pairs)."""

    source: str
    records: list[EvalRecord] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _label(record: Any, index: int) -> str:
    if isinstance(record, dict) and record.get("id") is not None:
        return f"record {str(record['id'])!r} (#{index})"
    return f"record #{index}"


def _iter_json(path: str) -> Iterator[Any]:
    with open(path, encoding="utf-8") as handle:
        if path.endswith(".jsonl"):
            for line_number, line in enumerate(handle, start=1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as error:
                        raise RecordError(f"{path}: line {line_number} is not valid JSON: {error}") from error
            return
        try:
            data = json.load(handle)
        except json.JSONDecodeError as error:
            raise RecordError(f"{path}: not valid JSON ({error}); JSON lines need a .jsonl name.") from error
    if not isinstance(data, list):
        raise RecordError(f"{path}: expected a JSON list of records, got {type(data).__name__}.")
    yield from data


def _iter_parquet(path: str, max_samples: int | None) -> Iterator[Any]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises ArrowInvalid / OSError for non-parquet files
        raise RecordError(f"{path}: cannot read as parquet: {error}") from error
    missing = [column for column in REQUIRED_COLUMNS if column not in parquet.schema_arrow.names]
    if missing:
        raise RecordError(
            f"{path}: missing column(s) {missing}; ECG-Bench records need {list(REQUIRED_COLUMNS)}, "
            f"the file has {parquet.schema_arrow.names}."
        )
    read = 0
    for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=list(REQUIRED_COLUMNS)):
        for row in batch.to_pylist():
            if max_samples is not None and read >= max_samples:
                return
            read += 1
            yield row


def _image_of(record: dict[str, Any], label: str, path: str, root: str) -> Any:
    image = record["image"]
    if image is None:
        return None
    if isinstance(image, dict):  # datasets' Image struct in parquet
        if image.get("bytes"):
            return {"bytes": image["bytes"], "path": image.get("path")}
        image = image.get("path")
        if not image:
            raise RecordError(f"{path}: {label}: 'image' has neither bytes nor a path.")
    if not isinstance(image, str):
        raise RecordError(
            f"{path}: {label}: 'image' must be a path or a {{bytes, path}} struct, got {type(image).__name__}."
        )
    return image if os.path.isabs(image) else os.path.join(root, image)


def _check_record(record: Any, label: str, path: str) -> tuple[str, Any]:
    """The (question, answer) of a record, or a :class:`RecordError` naming what is wrong."""
    if not isinstance(record, dict):
        raise RecordError(f"{path}: {label} is not an object (got {type(record).__name__}).")
    missing = [key for key in REQUIRED_COLUMNS if key not in record]
    if missing:
        raise RecordError(
            f"{path}: {label}: missing key(s) {missing}; ECG-Bench records need {list(REQUIRED_COLUMNS)}."
        )
    turns = record["conversations"]
    if not isinstance(turns, list) or len(turns) != 2:
        count = len(turns) if isinstance(turns, list) else type(turns).__name__
        raise RecordError(
            f"{path}: {label}: 'conversations' must be one human question and one gpt answer, got {count}."
        )
    for position, role in enumerate(("human", "gpt")):
        turn = turns[position]
        if not isinstance(turn, dict) or turn.get("from") != role or "value" not in turn:
            raise RecordError(
                f"{path}: {label}: turn {position} must be {{'from': {role!r}, 'value': ...}}, got {turn!r:.200}."
            )
    question, answer = _question_text(turns[0]["value"]), turns[1]["value"]
    if question is None:
        raise RecordError(
            f"{path}: {label}: the question (turn 0) must be a non-empty string (or a list of strings, as in the "
            f"Hugging Face ECGBench files), got {turns[0]['value']!r:.200}."
        )
    if not isinstance(answer, (str, list)):
        raise RecordError(f"{path}: {label}: the answer (turn 1) must be a string, got {type(answer).__name__}.")
    return question, answer


def _question_text(value: Any) -> str | None:
    """The question of a turn: a string, or a list of strings joined with ``""`` (the Hugging Face ECGBench
    schema, see the module docstring); ``None`` when it is neither, or empty."""
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        value = "".join(value)
    if not isinstance(value, str) or not value.strip():
        return None
    return value


def read_split(
    path: str | os.PathLike[str],
    image_root: str | os.PathLike[str] | None = None,
    max_samples: int | None = None,
    missing_images: str = "error",
) -> SplitRecords:
    """Read and check the records of one ECG-Bench split file (``.parquet``, ``.json`` or ``.jsonl``).

    Args:
        path: the split file.
        image_root: folder relative image paths start from; default: the file's folder.
        max_samples: keep only the first N records (smoke runs).
        missing_images: ``"error"`` (default) raises for an image path that does not exist; ``"skip"`` leaves
            the record out and lists it in ``SplitRecords.skipped``.

    Raises:
        FileNotFoundError: no such file. RecordError (a ``ValueError``): unknown extension, missing columns,
            a malformed record or a missing image, naming the file and the record; or no record at all.
    """
    path = os.fspath(path)
    if missing_images not in MISSING_IMAGE_POLICIES:
        raise ValueError(f"missing_images must be one of {MISSING_IMAGE_POLICIES}, got {missing_images!r}.")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ECG-Bench split file not found: {path}")
    root = os.path.abspath(os.fspath(image_root) if image_root is not None else os.path.dirname(path))
    if path.endswith(".parquet"):
        rows: Iterator[Any] = _iter_parquet(path, max_samples)
    elif path.endswith((".json", ".jsonl")):
        rows = _iter_json(path)
    else:
        raise RecordError(f"{path}: expected a .parquet, .json or .jsonl file.")
    result = SplitRecords(source=path)
    for index, record in enumerate(rows):
        if max_samples is not None and index >= max_samples:
            break
        label = _label(record, index)
        question, answer = _check_record(record, label, path)
        image = _image_of(record, label, path, root)
        if isinstance(image, str) and not os.path.isfile(image):
            if missing_images == "skip":
                result.skipped.append((str(record["id"]), f"image file not found: {image}"))
                continue
            raise RecordError(f"{path}: {label}: image file not found: {image}")
        result.records.append(
            EvalRecord(id=str(record["id"]), prompt=question, reference=answer, image=image, source=path, index=index)
        )
    if not result.records:
        detail = f" ({len(result.skipped)} skipped for missing images)" if result.skipped else ""
        raise RecordError(f"{path}: no record to evaluate{detail}.")
    return result
