"""The cache's summary: ``manifest.json`` merged from the shards' own metadata, and the report printed at the end."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evl_kd_trainer.cache.manifest import MANIFEST, finished_shards, human_bytes, size_report, write_json_atomic


def merge_manifest(directory: Path, config: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """(main process) ``manifest.json`` from every finished shard's metadata."""
    shards, records, dropped = [], {}, {}
    totals: dict[str, dict[str, float]] = {}
    shard_bytes = 0
    for info in finished_shards(directory):
        index = len(shards)
        shards.append(info.name)
        shard_bytes += info.nbytes
        for row, (rid, lengths) in enumerate(zip(info.record_ids, info.lengths)):
            records[rid] = [index, row, *lengths]
        dropped.update(info.dropped)
        for stream, values in info.stats.items():
            total = totals.setdefault(stream, dict.fromkeys(values, 0.0))
            for key, value in values.items():
                total[key] += value
    errors = {
        stream: {
            "rows": int(t["rows"]),
            "relative_rms_error": (t["sq_error"] / t["sq_norm"]) ** 0.5 if t["sq_norm"] else 0.0,
        }
        for stream, t in totals.items()
    }
    for stream, t in totals.items():
        if t.get("sq_centered"):  # PCA: the share of the variance about the basis mean that the cache keeps
            errors[stream]["retained_variance"] = 1.0 - t["sq_error"] / t["sq_centered"]
    manifest = {
        **config,
        **extra,
        "record_columns": ["shard", "row", "tokens", "hidden", "visual", "topk"],
        "shards": shards,
        "records": records,
        "dropped": {rid: reason for rid, reason in dropped.items() if rid not in records},
        "errors": errors,
        "size": size_report(directory, shard_bytes, len(records)),
    }
    write_json_atomic(directory / MANIFEST, manifest)
    return manifest


def size_lines(manifest: dict[str, Any]) -> str:
    """The end-of-build report: records, bytes per sample and at ECGInstruct scale, measured errors."""
    size = manifest["size"]
    lines = [
        f"Teacher cache: {size['records']} records ({len(manifest['dropped'])} dropped by the teacher view), "
        f"compression {manifest['compression']}.",
        f"  size: {human_bytes(size['bytes_per_sample'])} per sample, {human_bytes(size['shard_bytes'])} of shards "
        f"+ {human_bytes(size['shared_bytes'])} stored once",
        f"  at ECGInstruct's {size['extrapolated_samples']:,} samples: {human_bytes(size['extrapolated_bytes'])}",
    ]
    for stream, error in manifest["errors"].items():
        kept = f", retained variance {error['retained_variance']:.4f}" if "retained_variance" in error else ""
        lines.append(
            f"  {stream}: relative RMS error {error['relative_rms_error']:.3g}{kept} over {error['rows']} rows"
        )
    return "\n".join(lines)
