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

from evl_kd_trainer.data.messages import IMAGE_PLACEHOLDER, ROLE_MAP, count_image_parts

# Reasons a record can be rejected; the keys of `LoadReport.skipped`.
MALFORMED = "malformed"
MISSING_KEYS = "missing_keys"
EMPTY_CONVERSATIONS = "empty_conversations"
UNKNOWN_ROLE = "unknown_role"
NO_ASSISTANT_TURN = "no_assistant_turn"
IMAGE_COUNT_MISMATCH = "image_count_mismatch"
MISSING_IMAGE = "missing_image"
UNREADABLE_IMAGE = "unreadable_image"

CHECK_IMAGE_MODES = ("exists", "decode", "none")
TRL_ROLES = ("system", "user", "assistant", "tool")


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


def record_label(record: Any, index: int) -> str:
    """How error messages name a record: its ``id`` if it has one, else its position in the file."""
    if isinstance(record, dict) and record.get("id") is not None:
        return repr(str(record["id"]))
    return f"#{index} (no id)"


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
                MALFORMED, f"turn {turn_index}: 'value' must be a string", record_id=label, source=source
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
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message:
            raise InvalidRecordError(MISSING_KEYS, f"message {index} has no 'role'", record_id=label, source=source)
        if message["role"] not in TRL_ROLES:
            raise InvalidRecordError(
                UNKNOWN_ROLE, f"message {index}: unknown role {message['role']!r}", record_id=label, source=source
            )
    if not any(message["role"] == "assistant" for message in messages):
        raise InvalidRecordError(NO_ASSISTANT_TURN, "no assistant message", record_id=label, source=source)
    images = record.get("images") or []
    if not isinstance(images, list) or not all(isinstance(p, str) for p in images):
        raise InvalidRecordError(MALFORMED, "'images' must be a list of path strings", record_id=label, source=source)
    parts = count_image_parts(messages)
    # With string contents TRL puts all images before the first user text, so only structured ones can disagree.
    if parts and parts != len(images):
        raise InvalidRecordError(
            IMAGE_COUNT_MISMATCH, f"{parts} image part(s) but {len(images)} image(s)", record_id=label, source=source
        )
    return images


def check_image_file(path: str, mode: str, *, label: str, source: str) -> None:
    """``exists``: one ``stat`` (cheap, no decoding); ``decode``: open and verify with PIL; ``none``: nothing."""
    if mode == "none":
        return
    if not os.path.isfile(path):
        raise InvalidRecordError(
            MISSING_IMAGE, f"image file not found: {path}", record_id=label, source=source, image_path=path
        )
    if mode == "decode":
        from PIL import Image  # only needed in this mode

        try:
            with Image.open(path) as image:
                image.verify()
        except Exception as error:  # PIL raises many types (UnidentifiedImageError, OSError, SyntaxError)
            raise InvalidRecordError(
                UNREADABLE_IMAGE,
                f"cannot decode image {path}: {error}",
                record_id=label,
                source=source,
                image_path=path,
            ) from error
