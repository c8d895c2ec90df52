"""Stable record ids: the key under which a sample's teacher features are cached and looked up again.

A record's own ``id`` field is used when it has one (ECGInstruct records all do). Otherwise the id is the SHA-1 of
the canonical JSON of its messages and image references, so the same record gets the same id in the cache-building
run and in every training run, whatever the row order, the shuffling or the number of processes.

Image references: a path is used as written (moving an id-less dataset's images therefore changes its ids, and the
cache check then reports them missing); image bytes or a decoded picture are hashed by content.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

ID_KEY = "id"
HASH_PREFIX = "sha1-"


def _without_nulls(value: Any) -> Any:
    """Drop ``None`` entries of mappings, recursively: an Arrow-backed dataset gives every message part both
    ``type`` and ``text`` keys (one of them ``None``), a plain list does not; both must hash alike."""
    if isinstance(value, Mapping):
        return {str(k): _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_without_nulls(v) for v in value]
    return value


def image_reference(image: Any) -> str:
    """A stable string for one image entry: its path, or the SHA-1 of its bytes or pixels."""
    if isinstance(image, str):
        return image
    if isinstance(image, Mapping):
        if image.get("path"):
            return str(image["path"])
        if image.get("bytes") is not None:
            return "bytes:" + hashlib.sha1(bytes(image["bytes"])).hexdigest()
    tobytes = getattr(image, "tobytes", None)
    if callable(tobytes):  # a decoded PIL image: mode and size are part of what the processor sees
        digest = hashlib.sha1(f"{getattr(image, 'mode', '')}:{getattr(image, 'size', '')}:".encode())
        digest.update(tobytes())
        return "pixels:" + digest.hexdigest()
    raise TypeError(f"cannot reference an image of type {type(image).__name__} (expected a path, bytes or PIL image)")


def content_hash(example: Mapping[str, Any]) -> str:
    """SHA-1 of the canonical JSON (sorted keys, no nulls) of ``messages`` and the image references."""
    images = example.get("images")
    if images is None and example.get("image") is not None:  # the single-image key the collator also reads
        images = [example["image"]]
    payload = {
        "messages": _without_nulls(example.get("messages")),
        "images": [image_reference(image) for image in (images or [])],
    }
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return HASH_PREFIX + hashlib.sha1(text.encode("utf-8")).hexdigest()


def record_id(example: Mapping[str, Any]) -> str:
    """The record's ``id`` field as a string when present, else :func:`content_hash`."""
    value = example.get(ID_KEY)
    if value is not None and str(value) != "":
        return str(value)
    return content_hash(example)


def dataset_record_ids(dataset: Any) -> list[str]:
    """The ids of every row of a map-style dataset, in row order (the ``id`` column is read in one go)."""
    columns = getattr(dataset, "column_names", None) or []
    if ID_KEY in columns:
        values = dataset[ID_KEY]
        missing = [i for i, value in enumerate(values) if value is None or str(value) == ""]
        ids = [str(value) for value in values]
        for i in missing:  # rows without an id fall back to their content hash
            ids[i] = content_hash(dataset[i])
        return ids
    return [record_id(dataset[i]) for i in range(len(dataset))]


def first_duplicates(ids: Iterable[str], limit: int = 5) -> list[str]:
    """Up to ``limit`` ids that occur more than once, in order of their second occurrence."""
    seen: set[str] = set()
    duplicates: list[str] = []
    for value in ids:
        if value in seen and value not in duplicates:
            duplicates.append(value)
            if len(duplicates) >= limit:
                break
        seen.add(value)
    return duplicates
