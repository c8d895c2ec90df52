"""Loading ECGInstruct (LLaVA JSON / JSONL) into TRL's conversational VLM format, with lazy images.

Output columns: ``id`` (string), ``messages`` (TRL messages whose contents are lists of
``{"type": "image"|"text", "text": ...}`` parts, the image part where ``<image>`` was) and ``images``
(a ``List(Image(decode=False))`` of absolute paths). No pixel is decoded at load time: with 1.1M
records each image only has its header read (``check_images="header"``: format, size, mode, limits), and the
pixels are read when a batch is collated. Image paths must resolve inside ``image_root``. :class:`~evl_kd_trainer.data.collator.DualViewCollator` decodes the paths itself
and names the record ``id`` when an image turns out to be unreadable; pass ``decode_images=True`` to
get PIL images on access instead (what TRL's own ``DataCollatorForVisionLanguageModeling`` expects).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import datasets

from evl_kd_trainer.data.images import ImageLimits
from evl_kd_trainer.data.messages import conversations_to_messages
from evl_kd_trainer.data.paths import ImagePathError, resolve_image_path
from evl_kd_trainer.data.validation import (
    MALFORMED,
    InvalidRecordError,
    LoadReport,
    check_image_file,
    check_image_mode,
    check_llava_record,
    check_text_encoding,
    check_trl_record,
    llava_image_fields,
    record_label,
)

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike
LLAVA_FORMAT = "llava"
TRL_FORMAT = "trl"


def ecginstruct_features(decode_images: bool = False) -> datasets.Features:
    """The schema of a loaded ECGInstruct dataset (one schema for every record, so Arrow never has to guess)."""
    part = {"type": datasets.Value("string"), "text": datasets.Value("string")}
    message = {"role": datasets.Value("string"), "content": datasets.List(part)}
    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "messages": datasets.List(message),
            "images": datasets.List(datasets.Image(decode=decode_images)),
        }
    )


def load_ecginstruct(
    path: PathLike | list[PathLike] | datasets.Dataset | datasets.IterableDataset,
    image_root: PathLike | None = None,
    streaming: bool = False,
    skip_invalid: bool = False,
    check_images: str = "header",
    *,
    allow_paths_outside_root: bool = False,
    image_limits: ImageLimits | None = None,
    decode_images: bool = False,
    return_report: bool = False,
) -> datasets.Dataset | datasets.IterableDataset | tuple[datasets.Dataset | datasets.IterableDataset, LoadReport]:
    """Load ECGInstruct / LLaVA records (or TRL-format records) as a TRL ``messages`` + ``images`` dataset.

    Args:
        path: a ``.json`` (a list of records) or ``.jsonl`` file, or a list of such files; or a
            ``datasets.Dataset`` / ``IterableDataset`` already in TRL format (with a ``messages``
            column), returned unchanged (made iterable with ``streaming=True``).
        image_root: folder the records' relative image paths start from; default: each file's folder. Every
            image path must resolve (symlinks followed) inside it; others are refused (``image_outside_root``).
        streaming: return an ``IterableDataset`` that reads and checks records while it is iterated
            (errors then surface when the bad record is reached). JSONL streams line by line; a
            ``.json`` list has to be parsed whole when iteration starts.
        skip_invalid: skip bad records instead of raising; counts per reason are logged as a warning
            and kept in the :class:`LoadReport`. Whatever a file holds (any JSON type in any field, invalid
            UTF-8, deep nesting, a BOM) becomes a counted skip or an error naming the file and the record.
        check_images: ``"header"`` (the default: open each image lazily with PIL, reading format, size and mode
            without decoding; refuses empty, non-image, truncated-PNG, too large and too elongated files),
            ``"exists"`` (one ``stat`` per image), ``"decode"`` (also decode every image: slow on 1.1M images)
            or ``"none"``.
        allow_paths_outside_root: accept absolute image paths and paths resolving outside ``image_root``.
        image_limits: pixel-count, aspect-ratio and decode-size limits of the image checks (default
            :class:`~evl_kd_trainer.data.images.ImageLimits`: PIL's bomb threshold, aspect ratio 200).
        decode_images: ``images`` column decodes to PIL on access instead of giving ``{"path", "bytes"}``.
        return_report: also return the :class:`LoadReport` (``(dataset, report)``). The report summary is
            also stored in ``dataset.info.description`` for a non-streaming load.

    LLaVA records are ``{"id", "image": "rel/path.png" | "images": [...], "conversations": [{"from":
    "human"|"gpt"|"system", "value"}]}``; records without an image are allowed. The format is chosen from
    the first record: ``messages`` without ``conversations`` means TRL format, whose records keep their
    messages as they are (image paths are still resolved and checked).

    Raises:
        InvalidRecordError (a ``ValueError``): a bad record, naming the file, the record id and the image.
        FileNotFoundError: a missing input file. ValueError: no record left to train on.
    """
    check_image_mode(check_images)
    if isinstance(path, (datasets.Dataset, datasets.IterableDataset)):
        dataset, report = _passthrough(path, streaming)
        return (dataset, report) if return_report else dataset

    files = _input_files(path)
    report = LoadReport(files=files)
    options = {
        "image_root": image_root,
        "skip_invalid": skip_invalid,
        "check_images": check_images,
        "allow_outside_root": allow_paths_outside_root,
        "limits": image_limits or ImageLimits(),
    }
    record_format = _detect_format(files)
    if streaming:
        dataset = datasets.IterableDataset.from_generator(
            _generate_rows,
            features=ecginstruct_features(decode_images) if record_format == LLAVA_FORMAT else None,
            # A tuple, not a list: `datasets` would shard a list across generator calls, and each call would
            # restart the report, leaving it with the last file's counts only.
            gen_kwargs={"files": tuple(files), "record_format": record_format, "report": report, **options},
        )
        if record_format == TRL_FORMAT:
            dataset = _cast_trl_images(dataset, decode_images)
    else:
        rows = list(_generate_rows(files, record_format, report, **options))
        if not rows:
            raise ValueError(f"No valid record to load: {report.summary()}. First errors: {report.first_errors}")
        if record_format == LLAVA_FORMAT:
            dataset = datasets.Dataset.from_list(rows, features=ecginstruct_features(decode_images))
        else:
            dataset = _cast_trl_images(datasets.Dataset.from_list(rows), decode_images)
        dataset.info.description = report.summary()
    return (dataset, report) if return_report else dataset


def _passthrough(
    dataset: datasets.Dataset | datasets.IterableDataset, streaming: bool
) -> tuple[datasets.Dataset | datasets.IterableDataset, LoadReport]:
    columns = dataset.column_names or []
    if "messages" not in columns:
        raise ValueError(f"A dataset passed to load_ecginstruct needs a 'messages' column (TRL format); got {columns}.")
    report = LoadReport()
    if isinstance(dataset, datasets.Dataset):
        report.num_read = report.num_loaded = len(dataset)
        if streaming:
            dataset = dataset.to_iterable_dataset()
    return dataset, report


def _input_files(path: PathLike | list[PathLike]) -> list[str]:
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths:
        raise ValueError("load_ecginstruct needs at least one file.")
    files = []
    for item in paths:
        file = os.fspath(item)
        if not os.path.isfile(file):
            raise FileNotFoundError(f"ECGInstruct file not found: {file}")
        if not file.endswith((".json", ".jsonl")):
            raise ValueError(f"Expected a .json or .jsonl file, got {file}")
        files.append(file)
    return files


_CHUNK_CHARS = 1 << 20


class _BadElement:
    """An element of a JSON list that could be delimited but not decoded (nested too deeply, a huge integer)."""

    def __init__(self, message: str) -> None:
        self.message = message


def iter_json_array(file: str, chunk_chars: int = _CHUNK_CHARS) -> Iterator[Any]:
    """The elements of a file holding one JSON list, decoded one at a time.

    ECGInstruct ships as a single 1.1M-record ``.json`` list; ``json.load`` would hold all of it (and a stream
    would not start before it is read). This reads ``chunk_chars`` at a time and decodes each element as soon as
    it is complete, so memory stays at about one chunk plus one record. Malformed JSON is reported at once with
    its character offset in the file, as ``json.load`` would, trailing data after the list included; so is an
    element that cannot be decoded (nested too deeply, an integer of more digits than Python converts).
    """
    for element in _json_array_elements(file, chunk_chars):
        if isinstance(element, _BadElement):
            raise ValueError(f"{file}: {element.message}.")
        yield element


def _open_text(file: str) -> Any:
    # utf-8-sig drops a BOM; surrogateescape keeps an invalid byte as a lone surrogate, which the record check
    # (`check_text_encoding`) reports for that record instead of a UnicodeDecodeError ending the whole file.
    return open(file, encoding="utf-8-sig", errors="surrogateescape")


def _json_array_elements(file: str, chunk_chars: int = _CHUNK_CHARS) -> Iterator[Any]:
    """:func:`iter_json_array`, yielding a :class:`_BadElement` for an element that is delimited but undecodable."""
    decoder = json.JSONDecoder()
    with _open_text(file) as handle:
        buffer, pos, eof, dropped = "", 0, False, 0  # `dropped`: characters of the file before `buffer`

        def fill() -> bool:
            nonlocal buffer, pos, eof, dropped
            if eof:
                return False
            chunk = handle.read(chunk_chars)
            if not chunk:
                eof = True
                return False
            dropped += pos
            buffer, pos = buffer[pos:] + chunk, 0
            return True

        def skip_space() -> str:
            nonlocal pos
            while True:
                while pos < len(buffer) and buffer[pos] in " \t\r\n":
                    pos += 1
                if pos < len(buffer) or not fill():
                    return buffer[pos] if pos < len(buffer) else ""

        def invalid(message: str, at: int) -> ValueError:
            return ValueError(f"{file}: not valid JSON at character {dropped + at}: {message}.")

        def skip_element() -> None:
            """Move ``pos`` past the element starting there, by bracket counting (no recursion, strings skipped)."""
            nonlocal pos
            depth, in_string, escaped, at = 0, False, False, pos
            while True:
                if at >= len(buffer):
                    offset = at - pos
                    if not fill():
                        raise invalid("unterminated element", pos)
                    at = pos + offset
                    continue
                char = buffer[at]
                if in_string:
                    if escaped:
                        escaped = False
                    elif char == "\\":
                        escaped = True
                    elif char == '"':
                        in_string = False
                        if depth == 0:
                            at += 1
                            break
                elif char == '"':
                    in_string = True
                elif char in "[{":
                    depth += 1
                elif char in "]}":
                    if depth == 0:
                        break
                    depth -= 1
                    if depth == 0:
                        at += 1
                        break
                elif char == "," and depth == 0:
                    break
                at += 1
            pos = at

        first = skip_space()
        if first != "[":
            hint = "; JSON lines need a .jsonl name" if first == "{" else f", got {first!r}" if first else " (empty)"
            raise ValueError(f"{file}: expected a JSON list of records{hint}.")
        pos += 1
        if skip_space() == "]":
            pos += 1
        else:
            while True:
                start = dropped + pos
                while True:
                    try:
                        value, end = decoder.raw_decode(buffer, pos)
                    except json.JSONDecodeError as error:
                        # Only an element cut by the end of the buffer may be completed by the next chunk: an error
                        # close to the end (a literal such as `tru|e` fails at its start) or an unterminated string.
                        cut = error.pos >= len(buffer) - 8 or error.msg.startswith("Unterminated string")
                        if cut and fill():
                            continue
                        raise invalid(error.msg, error.pos) from error
                    except (RecursionError, ValueError) as error:
                        # Nested deeper than Python's recursion limit, or an integer over `sys.get_int_max_str_digits`:
                        # the element is well delimited, so only it is lost.
                        skip_element()
                        what = "nested too deeply" if isinstance(error, RecursionError) else str(error).split(";")[0]
                        value, end = _BadElement(f"element at character {start} cannot be decoded: {what}"), pos
                        break
                    # Only a number can be decoded from a prefix of itself ("3" of "3.5"): one that is not
                    # followed by a delimiter may go on in the next chunk.
                    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
                    if not is_number or (end < len(buffer) and buffer[end] in " \t\r\n,]") or not fill():
                        break
                pos = end
                yield value
                separator = skip_space()
                if separator == "]":
                    pos += 1
                    break
                if separator != ",":
                    raise invalid(f"expected ',' or ']' after an element, got {separator!r}", pos)
                pos += 1
                skip_space()
        if skip_space():
            raise invalid("extra data after the list", pos)


def _read_records(file: str) -> Iterator[tuple[int, Any]]:
    """Yield ``(index, record)``; a record that is not decodable JSON is yielded as an :class:`InvalidRecordError`."""
    if file.endswith(".json"):
        for index, element in enumerate(_json_array_elements(file)):
            if isinstance(element, _BadElement):
                element = InvalidRecordError(MALFORMED, element.message, record_id=f"#{index} (no id)", source=file)
            yield index, element
        return
    with _open_text(file) as handle:
        index = 0
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield index, json.loads(line)
            except (ValueError, RecursionError) as error:  # JSONDecodeError, a huge integer, deep nesting
                detail = "nested too deeply" if isinstance(error, RecursionError) else str(error).split(";")[0]
                label = f"#{index} (line {line_number})"
                yield index, InvalidRecordError(MALFORMED, f"invalid JSON: {detail}", record_id=label, source=file)
            index += 1


def _detect_format(files: list[str]) -> str:
    for _, record in _read_records(files[0]):
        if isinstance(record, dict) and "messages" in record and "conversations" not in record:
            return TRL_FORMAT
        return LLAVA_FORMAT
    raise ValueError(f"{files[0]}: no record in the file.")


def _generate_rows(
    files: list[str] | tuple[str, ...],
    record_format: str,
    report: LoadReport,
    image_root: PathLike | None,
    skip_invalid: bool,
    check_images: str,
    allow_outside_root: bool,
    limits: ImageLimits,
) -> Iterator[dict[str, Any]]:
    """Check and convert every record of ``files``, counting (or raising for) the bad ones in ``report``."""
    # A stream may be iterated several times: the report describes the latest pass.
    report.num_read = report.num_loaded = 0
    report.skipped.clear()
    report.first_errors.clear()
    for file in files:
        root = os.path.abspath(os.fspath(image_root) if image_root is not None else os.path.dirname(file))
        for index, record in _read_records(file):
            report.num_read += 1
            try:
                if isinstance(record, InvalidRecordError):
                    raise record
                row = _convert_record(
                    record,
                    record_format,
                    index=index,
                    file=file,
                    root=root,
                    mode=check_images,
                    allow_outside_root=allow_outside_root,
                    limits=limits,
                )
            except InvalidRecordError as error:
                if not skip_invalid:
                    raise
                report.add_skipped(error)
                continue
            report.num_loaded += 1
            yield row
    # Reached once every record was read (for a stream: at the end of the iteration).
    _log_skipped(report)


def _convert_record(
    record: Any,
    record_format: str,
    *,
    index: int,
    file: str,
    root: str,
    mode: str,
    allow_outside_root: bool,
    limits: ImageLimits,
) -> dict[str, Any]:
    label = record_label(record, index)
    check_text_encoding(record, label=label, source=file)
    if record_format == TRL_FORMAT:
        relative = check_trl_record(record, label=label, source=file)
    else:
        if not isinstance(record, dict):
            check_llava_record(record, label=label, source=file, num_images=0)  # raises "not a JSON object"
        relative = llava_image_fields(record, label=label, source=file)
        check_llava_record(record, label=label, source=file, num_images=len(relative))
    images = []
    for path in relative:
        try:
            images.append(resolve_image_path(root, path, allow_outside_root=allow_outside_root))
        except ImagePathError as error:
            raise InvalidRecordError(error.reason, str(error), record_id=label, source=file, image_path=path) from None
    # Structure first, paths second, files last: a malformed record never costs a stat, a hostile path is never read.
    for image in images:
        check_image_file(image, mode, label=label, source=file, limits=limits)
    if record_format == TRL_FORMAT:
        return {**record, "images": images} if "images" in record else record
    return {
        "id": str(record["id"]),
        "messages": conversations_to_messages(record["conversations"]),
        "images": images,
    }


def _cast_trl_images(
    dataset: datasets.Dataset | datasets.IterableDataset, decode_images: bool
) -> datasets.Dataset | datasets.IterableDataset:
    if "images" not in (dataset.column_names or []):
        return dataset
    return dataset.cast_column("images", datasets.List(datasets.Image(decode=decode_images)))


def _log_skipped(report: LoadReport) -> None:
    if report.num_skipped:
        logger.warning("load_ecginstruct skipped invalid records: %s", report.summary())
