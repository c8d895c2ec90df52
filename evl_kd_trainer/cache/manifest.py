"""The cache's files on disk, written atomically so a killed build leaves only complete files behind.

Layout of a cache folder::

    cache_config.json            fingerprint, stored feature set, compression (written first: a rerun compares it)
    teacher/                     the teacher's config.json and processor files (no weights)
    teacher_modules.safetensors  the LM head / input embeddings, once (logit methods)
    pca.safetensors              the PCA bases, once (compression "pca:R")
    shards/p000-000000.safetensors   per process p, numbered; each lists its records in its metadata
    manifest.json                record id -> shard, row and lengths; dropped records; sizes (written last)

A shard is written to ``<name>.tmp`` and renamed when complete, so a shard file that exists is whole: a rerun keeps
every shard, skips their records and deletes leftover ``.tmp`` files. ``manifest.json`` is rebuilt from the shards'
own metadata at the end of each run.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import safe_open

CACHE_CONFIG = "cache_config.json"
MANIFEST = "manifest.json"
TEACHER_DIR = "teacher"
TEACHER_MODULES = "teacher_modules.safetensors"
PCA_FILE = "pca.safetensors"
SHARD_DIR = "shards"
TMP_SUFFIX = ".tmp"
ECGINSTRUCT_SAMPLES = 1_156_110  # ECGInstruct's records: the scale the size report extrapolates to
_SHARD_NAME = re.compile(r"^p(\d{3,})-(\d{6,})\.safetensors$")
# Columns of a shard's "index" tensor, one row per record: [start, length] per stream.
INDEX_STREAMS = ("tokens", "hidden", "visual", "topk")


def shard_name(rank: int, number: int) -> str:
    return f"p{rank:03d}-{number:06d}.safetensors"


def write_json_atomic(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}{TMP_SUFFIX}")
    tmp.write_text(json.dumps(value, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); the cache is damaged, rebuild it.") from err


def fsync_file(path: Path) -> None:
    """Flush a written file to disk before it is renamed into place (a power cut must not leave a torn shard)."""
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


@dataclass
class ShardInfo:
    """One finished shard, read from its metadata: its records, dropped records and per-stream statistics."""

    name: str
    rank: int
    number: int
    fingerprint: str
    record_ids: list[str]
    lengths: list[list[int]]
    dropped: dict[str, str] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    nbytes: int = 0


def read_shard_info(path: Path) -> ShardInfo:
    match = _SHARD_NAME.match(path.name)
    if match is None:
        raise ValueError(f"{path}: not a shard name (p<rank>-<number>.safetensors).")
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
    except Exception as err:  # safetensors raises its own error type on a damaged header
        raise ValueError(f"{path}: cannot read the shard ({err}); delete it and rerun cache-teacher.") from err
    return ShardInfo(
        name=path.name,
        rank=int(match.group(1)),
        number=int(match.group(2)),
        fingerprint=meta.get("fingerprint", ""),
        record_ids=json.loads(meta.get("record_ids", "[]")),
        lengths=json.loads(meta.get("lengths", "[]")),
        dropped=json.loads(meta.get("dropped", "{}")),
        stats=json.loads(meta.get("stats", "{}")),
        nbytes=path.stat().st_size,
    )


def finished_shards(directory: Path) -> Iterator[ShardInfo]:
    """The complete shards of a cache folder, in name order (``.tmp`` leftovers are not shards)."""
    folder = directory / SHARD_DIR
    if not folder.is_dir():
        return
    for path in sorted(folder.iterdir()):
        if _SHARD_NAME.match(path.name):
            yield read_shard_info(path)


def remove_leftovers(directory: Path) -> int:
    """Delete the ``.tmp`` files a killed run left; returns how many."""
    removed = 0
    for folder in (directory, directory / SHARD_DIR):
        if folder.is_dir():
            for path in folder.iterdir():
                if path.name.endswith(TMP_SUFFIX):
                    path.unlink()
                    removed += 1
    return removed


def folder_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else 0


def size_report(directory: Path, shard_bytes: int, records: int) -> dict[str, Any]:
    """Bytes per cached sample (shards only), the once-stored files, and the extrapolation to ECGInstruct."""
    shared = sum(folder_bytes(directory / name) for name in (TEACHER_DIR, TEACHER_MODULES, PCA_FILE, CACHE_CONFIG))
    per_sample = shard_bytes / records if records else 0.0
    return {
        "records": records,
        "shard_bytes": shard_bytes,
        "shared_bytes": shared,
        "bytes_per_sample": per_sample,
        "extrapolated_samples": ECGINSTRUCT_SAMPLES,
        "extrapolated_bytes": per_sample * ECGINSTRUCT_SAMPLES + shared,
    }


def human_bytes(value: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{value:.0f} B"
        value /= 1000
    return f"{value:.1f} TB"
