"""A shard in the making: records' features accumulated on the CPU, then written as one safetensors file.

Every stream is stored as one concatenation over the shard's records (tokens ``(T,)``, hidden rows ``(N, D)`` or
their compressed parts, visual rows, top-k rows), plus an ``index`` tensor ``(records, 8)`` holding each record's
``[start, length]`` in the tokens, hidden, visual and top-k streams: a reader slices one record out of the
memory-mapped file without touching the rest. The metadata lists the records (in row order), those the teacher view
dropped (with the reason), each record's lengths, the reconstruction-error sums per stream and the fingerprint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from evl_kd_trainer.cache.compression import RowCodec
from evl_kd_trainer.cache.extract import RecordFeatures
from evl_kd_trainer.cache.manifest import INDEX_STREAMS, TMP_SUFFIX, fsync_file

TOKEN_STREAMS = ("input_ids", "attention_mask", "response_mask", "hidden_mask")
_TOKEN_DTYPES = {"input_ids": torch.int32}


def part_key(stream: str, part: str) -> str:
    """Tensor name of a codec part: ``hidden`` for the main part, ``hidden.scale`` for the others."""
    return stream if part == "" else f"{stream}.{part}"


class ShardBuffer:
    """Collect :class:`RecordFeatures` and write them as one shard.

    Args:
        codecs: the codec of each row stream stored (``"hidden"``, ``"visual"``).
        fingerprint: the cache's fingerprint hash, written into the shard's metadata.
        measure_error: decode every encoded row again and accumulate the squared error (lossy codecs).
    """

    def __init__(self, codecs: dict[str, RowCodec], fingerprint: str, measure_error: bool = False) -> None:
        self.codecs = codecs
        self.fingerprint = fingerprint
        self.measure_error = measure_error
        self.clear()

    def clear(self) -> None:
        self.record_ids: list[str] = []
        self.lengths: list[list[int]] = []
        self.dropped: dict[str, str] = {}
        self.tokens: dict[str, list[torch.Tensor]] = {name: [] for name in TOKEN_STREAMS}
        self.rows: dict[str, dict[str, list[torch.Tensor]]] = {name: {} for name in self.codecs}
        self.visual_weights: list[torch.Tensor] = []
        self.topk: dict[str, list[torch.Tensor]] = {"topk_logprobs": [], "topk_indices": []}
        self.stats: dict[str, dict[str, float]] = {}
        self.nbytes = 0

    def __len__(self) -> int:
        return len(self.record_ids)

    @property
    def empty(self) -> bool:
        return not self.record_ids and not self.dropped

    def add_dropped(self, record_id: str, reason: str) -> None:
        self.dropped[record_id] = reason

    def _add_rows(self, stream: str, rows: torch.Tensor) -> int:
        codec = self.codecs[stream]
        parts = codec.encode(rows)
        for name, part in parts.items():
            self.rows[stream].setdefault(name, []).append(part)
            self.nbytes += part.numel() * part.element_size()
        if self.measure_error and rows.shape[0]:
            reference = rows.detach().float()
            decoded = codec.decode({k: v.to(rows.device) for k, v in parts.items()}, torch.float32)
            stats = self.stats.setdefault(stream, {"rows": 0, "sq_error": 0.0, "sq_norm": 0.0, "sq_centered": 0.0})
            stats["rows"] += int(rows.shape[0])
            stats["sq_error"] += float((reference - decoded).pow(2).sum())
            stats["sq_norm"] += float(reference.pow(2).sum())
            if codec.basis is not None:  # the variance about the basis mean, of which PCA keeps a share
                stats["sq_centered"] += float((reference - codec.basis.mean.to(rows.device)).pow(2).sum())
        return int(rows.shape[0])

    def add(self, record: RecordFeatures) -> None:
        for name in TOKEN_STREAMS:
            value = getattr(record, name)
            value = value.to(_TOKEN_DTYPES.get(name, torch.bool))
            self.tokens[name].append(value)
            self.nbytes += value.numel() * value.element_size()
        hidden = self._add_rows("hidden", record.hidden) if record.hidden is not None else 0
        visual = self._add_rows("visual", record.visual) if record.visual is not None else 0
        if record.visual_weights is not None:
            self.visual_weights.append(record.visual_weights.float().cpu())
        topk = 0
        if record.topk_logprobs is not None:
            self.topk["topk_logprobs"].append(record.topk_logprobs.float())
            self.topk["topk_indices"].append(record.topk_indices.to(torch.int32))
            topk = int(record.topk_logprobs.shape[0])
            self.nbytes += record.topk_logprobs.numel() * 8
        self.record_ids.append(record.record_id)
        self.lengths.append([int(record.input_ids.shape[0]), hidden, visual, topk])

    def _tensors(self) -> dict[str, torch.Tensor]:
        tensors: dict[str, torch.Tensor] = {}
        for name, values in self.tokens.items():
            tensors[name] = torch.cat(values) if values else torch.zeros(0, dtype=_TOKEN_DTYPES.get(name, torch.bool))
        for stream, parts in self.rows.items():
            for part, values in parts.items():
                tensors[part_key(stream, part)] = torch.cat(values)
        if self.visual_weights:
            tensors["visual_weights"] = torch.cat(self.visual_weights)
        for name, values in self.topk.items():
            if values:
                tensors[name] = torch.cat(values)
        lengths = torch.tensor(self.lengths, dtype=torch.int64).reshape(-1, len(INDEX_STREAMS))
        starts = torch.cumsum(lengths, dim=0) - lengths
        tensors["index"] = torch.stack([starts, lengths], dim=-1).reshape(-1, 2 * len(INDEX_STREAMS))
        return {name: value.contiguous() for name, value in tensors.items()}

    def metadata(self) -> dict[str, str]:
        return {
            "fingerprint": self.fingerprint,
            "record_ids": json.dumps(self.record_ids),
            "lengths": json.dumps(self.lengths),
            "dropped": json.dumps(self.dropped),
            "stats": json.dumps(self.stats),
        }

    def write(self, path: Path) -> dict[str, Any]:
        """Write the shard atomically (``<path>.tmp``, flushed, renamed) and start a new one; returns its metadata."""
        tmp = path.with_name(path.name + TMP_SUFFIX)
        meta = self.metadata()
        save_file(self._tensors(), str(tmp), metadata=meta)
        fsync_file(tmp)
        os.replace(tmp, path)
        self.clear()
        return meta
