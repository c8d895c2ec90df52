"""`TeacherCacheReader`: cached teacher features by record id, padded per batch, read from memory-mapped shards.

    reader = TeacherCacheReader.open("cache/", expected_fingerprint=run_fingerprint(args, teacher_path, processor))
    reader.check(train_record_ids)                     # before training: missing ids are an error naming them
    teacher = reader.batch(batch["record_ids"])         # CachedTeacherBatch on reader.device
    features.teacher_lm_head = reader.lm_head           # nn.Linear, frozen (logit methods)

The teacher's adapter and widths come from its cached ``config.json`` (``reader.adapter``, ``reader.dims``), so a run
never loads the teacher's weights. Only the rows a batch needs are read (``safe_open`` slices of the shards);
:meth:`TeacherCacheReader.prefetch` reads the next batches on a background thread.
"""

from __future__ import annotations

import math
import os
import queue
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from evl_kd_trainer.cache.batch import CachedTeacherBatch
from evl_kd_trainer.cache.compression import RowCodec, parse_compression
from evl_kd_trainer.cache.fingerprint import compare_fingerprints
from evl_kd_trainer.cache.manifest import (
    INDEX_STREAMS,
    MANIFEST,
    PCA_FILE,
    SHARD_DIR,
    TEACHER_DIR,
    TEACHER_MODULES,
    read_json,
)
from evl_kd_trainer.cache.modules import load_teacher_modules
from evl_kd_trainer.cache.pca import PCABasis
from evl_kd_trainer.cache.request import TeacherFeatureSet
from evl_kd_trainer.cache.shards import TOKEN_STREAMS, part_key

PCA_OUTPUTS = ("reconstruct", "coefficients", "both")
_PARTS = {"fp32": ("",), "bf16": ("",), "fp8": ("", "scale"), "pca": ("",)}
_SHOWN_MISSING = 5


class TeacherCacheReader:
    """Read a teacher-feature cache built by ``evl-kd cache-teacher``.

    Args:
        directory: the cache folder.
        device: where batches are assembled and returned.
        dtype: dtype of the returned features and of the LM head / embeddings; ``None``: the teacher's own dtype
            (what the live path computes in, so a bf16 or fp32 cache reads back exactly).
        expected_fingerprint: the run's fingerprint (:func:`~evl_kd_trainer.cache.settings.run_fingerprint`):
            a differing field, or features the run reads and the cache lacks, raise ``ValueError`` naming them.
        pca_output: for a PCA cache, return reconstructed states (``"reconstruct"``), the coefficients only
            (``"coefficients"``: project the aligners' linear maps with ``reader.pca[stream].project_linear``) or both.
        pad_to_multiple_of: round the padded length up, as the collator's option of that name does.
        max_open_shards: shard files kept open (memory-mapped) at once.
    """

    def __init__(
        self,
        directory: str | Path,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
        *,
        expected_fingerprint: Mapping[str, Any] | None = None,
        pca_output: str = "reconstruct",
        pad_to_multiple_of: int | None = None,
        max_open_shards: int = 64,
    ) -> None:
        from transformers import AutoConfig

        from evl_kd_trainer.models import get_adapter

        self.directory = Path(directory)
        path = self.directory / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no manifest, so the cache was never finished; rerun `evl-kd cache-teacher` on it (it resumes)."
            )
        if pca_output not in PCA_OUTPUTS:
            raise ValueError(f"pca_output must be one of {PCA_OUTPUTS}, got {pca_output!r}.")
        manifest = read_json(path)
        self.fingerprint: dict[str, Any] = manifest["fingerprint"]
        self.features = TeacherFeatureSet.from_dict(manifest["features"])
        if expected_fingerprint is not None:
            self.check_fingerprint(expected_fingerprint)
        self.spec = parse_compression(manifest["compression"])
        self.errors: dict[str, Any] = manifest.get("errors", {})
        self.size: dict[str, Any] = manifest.get("size", {})
        self.dropped: dict[str, str] = manifest.get("dropped", {})
        self._records: dict[str, list[int]] = manifest["records"]
        self._shards: list[str] = manifest["shards"]
        self.device = torch.device(device)
        self.dtype = dtype or getattr(torch, manifest["teacher_dtype"])
        self.pad_token_id = int(manifest["pad_token_id"])
        self.config = AutoConfig.from_pretrained(self.directory / TEACHER_DIR)
        self.adapter = get_adapter(self.config)
        self.dims = self.adapter.dims
        self.pca: dict[str, PCABasis] = {}
        if self.spec.kind == "pca":
            saved = load_file(str(self.directory / PCA_FILE))
            self.pca = {
                s: PCABasis.from_state_dict(saved, s).to(self.device)
                for s in ("hidden", "visual")
                if f"{s}.basis" in saved
            }
        # A PCA cache has a basis for each stream it stores only (no visual one for a method without visual tokens).
        self._codecs = {
            stream: RowCodec(self.spec, self.pca.get(stream))
            for stream in ("hidden", "visual")
            if self.spec.kind != "pca" or stream in self.pca
        }
        self.pca_output = pca_output
        self.pad_to_multiple_of = pad_to_multiple_of
        self.lm_head, self.embed_tokens = load_teacher_modules(
            self.directory / TEACHER_MODULES, self.device, self.dtype
        )
        self._max_open = max_open_shards
        self._reset_handles()

    def _reset_handles(self) -> None:
        self._handles: OrderedDict[int, tuple[Any, torch.Tensor, set[str]]] = OrderedDict()
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        # Picklable for DataLoader workers started by "spawn": open files and the lock are made again there.
        state = dict(self.__dict__)
        for name in ("_handles", "_lock", "_pid"):
            state.pop(name)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_handles()

    @classmethod
    def open(cls, directory: str | Path, expected_fingerprint: Mapping[str, Any] | None = None, **kwargs: Any):
        """The reader of ``directory``, refusing it up front when ``expected_fingerprint`` does not match."""
        return cls(directory, expected_fingerprint=expected_fingerprint, **kwargs)

    # --------------------------------------------------------------------------------------------- checks
    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, record_id: object) -> bool:
        return record_id in self._records

    def check_fingerprint(self, expected: Mapping[str, Any]) -> None:
        """``ValueError`` naming the first field of ``expected`` that differs (``features``: what the run reads
        must be a part of what the cache holds)."""
        where = str(self.directory)
        compare_fingerprints({k: v for k, v in expected.items() if k != "features"}, self.fingerprint, where)
        if "features" in expected:
            required = expected["features"]
            required = required if isinstance(required, TeacherFeatureSet) else TeacherFeatureSet.from_dict(required)
            reason = self.features.missing_for(required)
            if reason is not None:
                raise ValueError(f"{where}: the cache does not match this run: fingerprint field 'features': {reason}.")

    def check(self, record_ids: Iterable[str], expected_fingerprint: Mapping[str, Any] | None = None) -> list[str]:
        """Before training: the fingerprint (when given) and that every record is cached.

        Returns the ids the teacher view dropped when the cache was built (too long, bad image...): the run must
        drop them as well (a live run's collator would). Raises ``ValueError`` naming the first missing ids.
        """
        if expected_fingerprint is not None:
            self.check_fingerprint(expected_fingerprint)
        missing, dropped = [], []
        for rid in record_ids:
            if rid in self._records:
                continue
            (dropped if rid in self.dropped else missing).append(rid)
        if missing:
            shown = ", ".join(repr(r) for r in missing[:_SHOWN_MISSING])
            more = f" and {len(missing) - _SHOWN_MISSING} more" if len(missing) > _SHOWN_MISSING else ""
            raise ValueError(
                f"{self.directory}: {len(missing)} record(s) of the training set are not in the cache: {shown}{more}; "
                "build the cache on this dataset (evl-kd cache-teacher resumes and adds them)."
            )
        return dropped

    # ---------------------------------------------------------------------------------------------- reads
    def _shard(self, index: int) -> tuple[Any, torch.Tensor, set[str]]:
        if os.getpid() != self._pid:  # a forked DataLoader worker opens its own files
            self._handles.clear()
            self._pid = os.getpid()
        entry = self._handles.get(index)
        if entry is None:
            handle = safe_open(str(self.directory / SHARD_DIR / self._shards[index]), framework="pt")
            entry = (handle, handle.get_tensor("index"), set(handle.keys()))
            self._handles[index] = entry
            while len(self._handles) > self._max_open:
                self._handles.popitem(last=False)
        else:
            self._handles.move_to_end(index)
        return entry

    def read_record(self, record_id: str) -> dict[str, torch.Tensor]:
        """The stored tensors of one record (CPU, as stored): token streams and each row stream's parts."""
        if record_id not in self._records:
            why = f"dropped by the teacher view ({self.dropped[record_id]})" if record_id in self.dropped else "absent"
            raise KeyError(f"record {record_id!r} is not in the cache {self.directory}: {why}.")
        shard, row = self._records[record_id][:2]
        with self._lock:
            handle, index, keys = self._shard(shard)
            spans = {name: (int(index[row, 2 * i]), int(index[row, 2 * i + 1])) for i, name in enumerate(INDEX_STREAMS)}
            out: dict[str, torch.Tensor] = {}
            start, length = spans["tokens"]
            for name in TOKEN_STREAMS:
                out[name] = handle.get_slice(name)[start : start + length]
            names = [(s, part_key(s, p)) for s in ("hidden", "visual") for p in _PARTS[self.spec.kind]]
            names += [("visual", "visual_weights"), ("topk", "topk_logprobs"), ("topk", "topk_indices")]
            for stream, name in names:
                if name in keys:
                    start, length = spans[stream]
                    out[name] = handle.get_slice(name)[start : start + length]
        return out

    def _rows(self, stream: str, record: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = {p: record[part_key(stream, p)].to(self.device) for p in _PARTS[self.spec.kind]}
        return self._codecs[stream].decode(parts, self.dtype) if self.spec.kind != "pca" else parts[""]

    def batch(self, record_ids: Sequence[str]) -> CachedTeacherBatch:
        """The records' features, padded as the live teacher path pads them (see :class:`CachedTeacherBatch`)."""
        records = [self.read_record(rid) for rid in record_ids]
        n, dev = len(records), self.device
        length = max((int(r["input_ids"].shape[0]) for r in records), default=0)
        if self.pad_to_multiple_of:
            length = math.ceil(length / self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((n, length), self.pad_token_id, dtype=torch.long, device=dev)
        attention = torch.zeros(n, length, dtype=torch.long, device=dev)
        response = torch.zeros(n, length, dtype=torch.bool, device=dev)
        hidden_mask = torch.zeros(n, length, dtype=torch.bool, device=dev)
        for b, r in enumerate(records):
            size = r["input_ids"].shape[0]
            input_ids[b, :size] = r["input_ids"].to(dev, torch.long)
            attention[b, :size] = r["attention_mask"].to(dev, torch.long)
            response[b, :size] = r["response_mask"].to(dev)
            hidden_mask[b, :size] = r["hidden_mask"].to(dev)
        out = CachedTeacherBatch(
            record_ids=list(record_ids), input_ids=input_ids, attention_mask=attention, response_mask=response,
            image_mask=self.adapter.image_token_mask(input_ids), hidden=None, hidden_mask=hidden_mask,
        )  # fmt: skip
        hidden_rows = [self._rows("hidden", r) if "hidden" in r else None for r in records]
        out.hidden, out.hidden_coeffs = self._scatter_tokens(hidden_rows, hidden_mask)
        if self.features.visual:
            visual_rows = [self._rows("visual", r) for r in records]
            visual, out.visual_coeffs, out.visual_mask = self._pad_rows(visual_rows)
            out.visual = visual
            if any("visual_weights" in r for r in records):
                weights = [r["visual_weights"].to(dev, torch.float32) for r in records]
                out.visual_weights = _pad_stack(weights, out.visual_mask.shape[1], dev)
        if self.features.logits_topk:
            values = [r["topk_logprobs"].to(dev) for r in records]
            out.topk_mask = _pad_mask([v.shape[0] for v in values], dev)
            out.topk_logprobs = _pad_stack(values, out.topk_mask.shape[1], dev)
            indices = [r["topk_indices"].to(dev, torch.long) for r in records]
            out.topk_indices = _pad_stack(indices, out.topk_mask.shape[1], dev)
        return out

    def _decoded(self, stream: str, rows: torch.Tensor) -> torch.Tensor:
        """PCA coefficients -> states; other codecs decoded already."""
        return self.pca[stream].decode(rows).to(self.dtype) if self.spec.kind == "pca" else rows

    def _scatter_tokens(
        self, rows: list[torch.Tensor | None], mask: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        n, length = mask.shape
        coeffs = None
        if self.spec.kind == "pca" and self.pca_output != "reconstruct" and "hidden" in self.pca:
            coeffs = torch.zeros(n, length, self.spec.rank, dtype=self.dtype, device=self.device)
        hidden = None
        if self.pca_output != "coefficients" or self.spec.kind != "pca":
            hidden = torch.zeros(n, length, self.dims.hidden_size, dtype=self.dtype, device=self.device)
        for b, value in enumerate(rows):
            if value is None:
                continue
            if hidden is not None:
                hidden[b][mask[b]] = self._decoded("hidden", value).to(self.dtype)
            if coeffs is not None:
                coeffs[b][mask[b]] = value.to(self.dtype)
        return hidden, coeffs

    def _pad_rows(self, rows: list[torch.Tensor]) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
        mask = _pad_mask([r.shape[0] for r in rows], self.device)
        width = mask.shape[1]
        coeffs = None
        if self.spec.kind == "pca" and self.pca_output != "reconstruct":
            coeffs = _pad_stack([r.to(self.dtype) for r in rows], width, self.device, self.spec.rank)
        states = None
        if self.pca_output != "coefficients" or self.spec.kind != "pca":
            decoded = [self._decoded("visual", r).to(self.dtype) for r in rows]
            states = _pad_stack(decoded, width, self.device, self.dims.visual_width)
        return states, coeffs, mask

    def prefetch(self, id_batches: Iterable[Sequence[str]], depth: int = 2) -> Iterator[CachedTeacherBatch]:
        """:meth:`batch` of each id list, read ``depth`` batches ahead on a background thread, in order."""
        slots: queue.Queue = queue.Queue(maxsize=max(1, depth))
        done = object()

        def work() -> None:
            try:
                for ids in id_batches:
                    slots.put(self.batch(ids))
            except BaseException as err:  # handed to the consumer, raised there
                slots.put(err)
            slots.put(done)

        thread = threading.Thread(target=work, name="teacher-cache-prefetch", daemon=True)
        thread.start()
        while True:
            item = slots.get()
            if item is done:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
        thread.join()


def _pad_mask(counts: list[int], device: torch.device) -> torch.Tensor:
    width = max(counts, default=0)
    return torch.arange(width, device=device)[None, :] < torch.tensor(counts, device=device)[:, None]


def _pad_stack(rows: list[torch.Tensor], width: int, device: torch.device, dim: int | None = None) -> torch.Tensor:
    """Stack ``(n_i, ...)`` rows zero-padded to ``width`` along the first dimension."""
    trailing = rows[0].shape[1:] if rows else ((dim,) if dim is not None else ())
    dtype = rows[0].dtype if rows else torch.float32
    out = torch.zeros(len(rows), width, *trailing, dtype=dtype, device=device)
    for b, value in enumerate(rows):
        out[b, : value.shape[0]] = value
    return out
