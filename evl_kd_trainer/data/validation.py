"""Checks of ECGInstruct / LLaVA / TRL-format records, run before any expensive work.

Every failed check raises :class:`InvalidRecordError` (a ``ValueError``) whose message names the file,
the record ``id`` (or its index when it has none) and, for image problems, the image path. The loader
either lets it propagate or, with ``skip_invalid=True``, counts it per reason in a :class:`LoadReport`.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from evl_kd_trainer.data.images import (
    IMAGE_ASPECT_RATIO,
    IMAGE_TOO_LARGE,
    MISSING_IMAGE,
    UNREADABLE_IMAGE,
    BadImageError,
    ImageLimits,
    decode_image,
    read_image_header,
)
from evl_kd_trainer.data.messages import IMAGE_PLACEHOLDER, ROLE_MAP
from evl_kd_trainer.data.paths import IMAGE_OUTSIDE_ROOT

# Reasons a record can be rejected; the keys of `LoadReport.skipped`.
MALFORMED = "malformed"
MISSING_KEYS = "missing_keys"
EMPTY_CONVERSATIONS = "empty_conversations"
UNKNOWN_ROLE = "unknown_role"
NO_ASSISTANT_TURN = "no_assistant_turn"
IMAGE_COUNT_MISMATCH = "image_count_mismatch"
REASONS = (
    MALFORMED,
    MISSING_KEYS,
    EMPTY_CONVERSATIONS,
    UNKNOWN_ROLE,
    NO_ASSISTANT_TURN,
    IMAGE_COUNT_MISMATCH,
    IMAGE_OUTSIDE_ROOT,
    MISSING_IMAGE,
    UNREADABLE_IMAGE,
    IMAGE_TOO_LARGE,
    IMAGE_ASPECT_RATIO,
)

CHECK_IMAGE_MODES = ("header", "exists", "decode", "none")
TRL_ROLES = ("system", "user", "assistant", "tool")
TRL_PART_TYPES = ("text", "image")
_LABEL_CHARS = 80  # an id is echoed in messages; a 1-MB id is cut


class InvalidRecordError(ValueError):
    """A record that cannot be trained on; ``reason`` is one of the module's reason constants."""

    def __init__(self, reason: str, detail: str, *, record_id: str, source: str, image_path: str | None = None) -> None:
        self.reason = reason
        self.record_id = record_id
        self.source = source
        self.image_path = image_path
        super().__init__(f"{source}: record {record_id}: {detail} [{reason}]")


@dataclass
class LoadReport:
    """What :func:`~evl_kd_trainer.data.ecginstruct.load_ecginstruct` read, kept and skipped (per reason).

    With ``streaming=True`` records are checked as they stream, so the counts grow during iteration.
    ``first_errors`` keeps the first message per reason, so a skipped reason can be looked up.
    """

    files: list[str] = field(default_factory=list)
    num_read: int = 0
    num_loaded: int = 0
    skipped: Counter = field(default_factory=Counter)
    first_errors: dict[str, str] = field(default_factory=dict)

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    def add_skipped(self, error: InvalidRecordError) -> None:
        self.skipped[error.reason] += 1
        self.first_errors.setdefault(error.reason, str(error))

    def summary(self) -> str:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(self.skipped.items())) or "none"
        return (
            f"read {self.num_read} records from {', '.join(self.files) or 'a dataset'}; loaded {self.num_loaded}; "
            f"skipped {self.num_skipped} ({reasons})"
        )


def valid_id(value: Any) -> bool:
    """An ``id`` is a string or an integer (``null``, floats, booleans, lists and objects are not)."""
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def record_label(record: Any, index: int) -> str:
    """How error messages name a record: its ``id`` if it has a valid one, else its position in the file."""
    if isinstance(record, dict) and valid_id(record.get("id")):
        text = repr(str(record["id"]))
        return text if len(text) <= _LABEL_CHARS else f"{text[:_LABEL_CHARS]}...' (#{index})"
    return f"#{index} (no id)" if not isinstance(record, dict) or "id" not in record else f"#{index} (invalid id)"


def check_text_encoding(record: Any, *, label: str, source: str) -> None:
    """Every string of ``record`` (keys included) is valid Unicode that UTF-8 can encode.

    Files are read with ``errors="surrogateescape"``, so an invalid UTF-8 byte arrives here as a lone surrogate
    (as does a ``"\\udc80"`` escape in the JSON text); Arrow and the tokenizers would fail on it later, naming
    nothing. The walk is iterative: deep nesting cannot overflow the stack.
    """
    stack = [record]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if not value.isascii():
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError as error:
                    bad = value[error.start : error.end].encode("utf-8", "surrogateescape")
                    raise InvalidRecordError(
                        MALFORMED,
                        f"invalid UTF-8 (bytes {bad!r} or a lone surrogate escape) in the string {value[:40]!r}",
                        record_id=label,
                        source=source,
                    ) from None
        elif isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


def check_image_mode(check_images: str) -> None:
    """Reject an unknown ``check_images`` value before any file is read."""
    if check_images not in CHECK_IMAGE_MODES:
        raise ValueError(f"check_images must be one of {CHECK_IMAGE_MODES}, got {check_images!r}.")


def llava_image_fields(record: dict[str, Any], *, label: str, source: str) -> list[str]:
    """The image paths of a LLaVA record, from ``image`` (one path) and/or ``images`` (a list), in that order."""
    paths: list[str] = []
    image = record.get("image")
    if image is not None:
        if not isinstance(image, str):
            raise InvalidRecordError(
                MALFORMED, f"'image' must be a path string, got {type(image).__name__}", record_id=label, source=source
            )
        paths.append(image)
    images = record.get("images")
    if images is not None:
        if not isinstance(images, list) or not all(isinstance(p, str) for p in images):
            raise InvalidRecordError(
                MALFORMED, "'images' must be a list of path strings", record_id=label, source=source
            )
        paths.extend(images)
    return paths


def check_llava_record(record: Any, *, label: str, source: str, num_images: int) -> None:
    """Structure of a LLaVA record: keys, turns, roles, an answer, one ``<image>`` per image."""
    if not isinstance(record, dict):
        raise InvalidRecordError(MALFORMED, "record is not a JSON object", record_id=label, source=source)
    missing = [key for key in ("id", "conversations") if key not in record]
    if missing:
        raise InvalidRecordError(MISSING_KEYS, f"missing key(s) {missing}", record_id=label, source=source)
    if not valid_id(record["id"]):
        raise InvalidRecordError(
            MALFORMED,
            f"'id' must be a string or an integer, got {_json_type(record['id'])}",
            record_id=label,
            source=source,
        )
    conversations = record["conversations"]
    if not isinstance(conversations, list):
        raise InvalidRecordError(MALFORMED, "'conversations' must be a list", record_id=label, source=source)
    if not conversations:
        raise InvalidRecordError(EMPTY_CONVERSATIONS, "'conversations' is empty", record_id=label, source=source)
    placeholders = 0
    for turn_index, turn in enumerate(conversations):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise InvalidRecordError(
                MISSING_KEYS, f"turn {turn_index} needs 'from' and 'value'", record_id=label, source=source
            )
        if not isinstance(turn["value"], str):
            raise InvalidRecordError(
                MALFORMED,
                f"turn {turn_index}: 'value' must be a string, got {_json_type(turn['value'])}",
                record_id=label,
                source=source,
            )
        if not isinstance(turn["from"], str):  # a list or object is unhashable: `in ROLE_MAP` would raise
            raise InvalidRecordError(
                MALFORMED,
                f"turn {turn_index}: 'from' must be a string, got {_json_type(turn['from'])}",
                record_id=label,
                source=source,
            )
        if turn["from"] not in ROLE_MAP:
            raise InvalidRecordError(
                UNKNOWN_ROLE,
                f"turn {turn_index}: unknown 'from' {turn['from']!r} (expected one of {sorted(ROLE_MAP)})",
                record_id=label,
                source=source,
            )
        count = turn["value"].count(IMAGE_PLACEHOLDER)
        if count and ROLE_MAP[turn["from"]] != "user":
            raise InvalidRecordError(
                IMAGE_COUNT_MISMATCH,
                f"turn {turn_index}: {IMAGE_PLACEHOLDER!r} in a {turn['from']!r} turn",
                record_id=label,
                source=source,
            )
        placeholders += count
    if not any(ROLE_MAP[turn["from"]] == "assistant" for turn in conversations):
        raise InvalidRecordError(NO_ASSISTANT_TURN, "no 'gpt' (assistant) turn", record_id=label, source=source)
    if placeholders != num_images:
        raise InvalidRecordError(
            IMAGE_COUNT_MISMATCH,
            f"{placeholders} {IMAGE_PLACEHOLDER!r} placeholder(s) but {num_images} image(s)",
            record_id=label,
            source=source,
        )


def check_trl_record(record: Any, *, label: str, source: str) -> list[str]:
    """Structure of a TRL-format record (``messages`` + optional ``images`` paths); returns the image paths."""
    if not isinstance(record, dict):
        raise InvalidRecordError(MALFORMED, "record is not a JSON object", record_id=label, source=source)
    messages = record.get("messages")
    if not isinstance(messages, list):
        raise InvalidRecordError(MISSING_KEYS, "'messages' must be a list", record_id=label, source=source)
    if not messages:
        raise InvalidRecordError(EMPTY_CONVERSATIONS, "'messages' is empty", record_id=label, source=source)
    parts = 0
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message:
            raise InvalidRecordError(MISSING_KEYS, f"message {index} has no 'role'", record_id=label, source=source)
        if not isinstance(message["role"], str) or message["role"] not in TRL_ROLES:
            raise InvalidRecordError(
                UNKNOWN_ROLE, f"message {index}: unknown role {message['role']!r}", record_id=label, source=source
            )
        parts += _check_trl_content(message.get("content"), f"message {index}", label=label, source=source)
    if not any(message["role"] == "assistant" for message in messages):
        raise InvalidRecordError(NO_ASSISTANT_TURN, "no assistant message", record_id=label, source=source)
    images = record.get("images") or []
    if not isinstance(images, list) or not all(isinstance(p, str) for p in images):
        raise InvalidRecordError(MALFORMED, "'images' must be a list of path strings", record_id=label, source=source)
    # With string contents TRL puts all images before the first user text, so only structured ones can disagree.
    if parts and parts != len(images):
        raise InvalidRecordError(
            IMAGE_COUNT_MISMATCH, f"{parts} image part(s) but {len(images)} image(s)", record_id=label, source=source
        )
    return images


def _json_type(value: Any) -> str:
    names = {type(None): "null", bool: "a boolean", str: "a string", list: "a list", dict: "an object"}
    return names.get(type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def _check_trl_content(content: Any, where: str, *, label: str, source: str) -> int:
    """A TRL ``content``: a string, or a list of ``{"type": "text", "text": str}`` / ``{"type": "image"}`` parts.

    Returns the number of image parts.
    """
    if content is None or isinstance(content, str):
        return 0
    if not isinstance(content, list):
        raise InvalidRecordError(
            MALFORMED,
            f"{where}: 'content' must be a string or a list of parts, got {_json_type(content)}",
            record_id=label,
            source=source,
        )
    images = 0
    for position, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if not isinstance(kind, str) or kind not in TRL_PART_TYPES:
            raise InvalidRecordError(
                MALFORMED,
                f"{where}, part {position}: expected an object with 'type' 'text' or 'image', got "
                f"{_json_type(part) if not isinstance(part, dict) else repr(kind)}",
                record_id=label,
                source=source,
            )
        if kind == "text" and not isinstance(part.get("text"), str):
            raise InvalidRecordError(
                MALFORMED,
                f"{where}, part {position}: 'text' must be a string, got {_json_type(part.get('text'))}",
                record_id=label,
                source=source,
            )
        images += kind == "image"
    return images


def check_image_file(path: str, mode: str, *, label: str, source: str, limits: ImageLimits | None = None) -> None:
    """Check one image file: ``header`` (the default) opens it lazily with PIL (format, size, mode, limits, a PNG's
    end) without decoding; ``exists`` is one ``stat``; ``decode`` also decodes the pixels (slow on 1.1M images);
    ``none`` checks nothing."""
    if mode == "none":
        return
    if not os.path.isfile(path):
        raise InvalidRecordError(
            MISSING_IMAGE, f"image file not found: {path}", record_id=label, source=source, image_path=path
        )
    if mode == "exists":
        return
    try:
        read_image_header(path, limits)
        if mode == "decode":
            decode_image(path, path, limits)
    except BadImageError as error:
        raise InvalidRecordError(error.reason, str(error), record_id=label, source=source, image_path=path) from error
