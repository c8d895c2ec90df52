"""`TeacherCacheCollator`: a student-view collator plus the batch's cached teacher features, read in the data loader.

With DataLoader workers (``dataloader_num_workers``) the shard reads and padding happen in the workers, ahead of the
training step: the cache's prefetching comes for free. Each batch gets the keys a live batch has for the teacher
view (``teacher_input_ids``, ``teacher_attention_mask``, ``teacher_response_mask``) and the cached features under
``teacher_cached_<field>`` (:class:`~evl_kd_trainer.cache.batch.CachedTeacherBatch`'s fields); the trainer pops every
``teacher_*`` key as it does today and rebuilds the batch with :func:`cached_batch_from_inputs`. Records the teacher
view dropped when the cache was built are dropped here too, before the student view is rendered (counted in
``stats["dropped_by_teacher_cache"]``).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import torch

from evl_kd_trainer.cache.batch import CachedTeacherBatch
from evl_kd_trainer.cache.ids import record_id
from evl_kd_trainer.cache.reader import TeacherCacheReader

CACHED_PREFIX = "teacher_cached_"
_VIEW_FIELDS = ("input_ids", "attention_mask", "response_mask")


class TeacherCacheCollator:
    """Wrap ``collator`` (a ``DualViewCollator`` of the student view built with ``return_record_ids=True``).

    Args:
        collator: renders the student view and returns ``record_ids``.
        reader: the cache, read on the CPU in the loader (``TeacherCacheReader(dir, device="cpu")``).
    """

    def __init__(self, collator: Any, reader: TeacherCacheReader) -> None:
        if not getattr(collator, "return_record_ids", False):
            raise ValueError("TeacherCacheCollator needs a collator built with return_record_ids=True.")
        self.collator = collator
        self.reader = reader
        self._fallback: Any = None
        self._cursor = 0

    @property
    def stats(self) -> dict[str, int]:
        return self.collator.stats

    def __getattr__(self, name: str) -> Any:  # on_bad_image, special_token_text, ... of the wrapped collator
        if "collator" not in self.__dict__:  # while unpickling (a spawned DataLoader worker)
            raise AttributeError(name)
        return getattr(self.__dict__["collator"], name)

    def set_fallback_dataset(self, dataset: Any, max_tries: int = 64) -> None:
        """As ``DualViewCollator.set_fallback_dataset``; also the source of a replacement when the cache dropped a
        whole batch."""
        self._fallback = dataset if dataset is not None and hasattr(dataset, "__getitem__") else None
        self._tries = max_tries
        self.collator.set_fallback_dataset(dataset, max_tries)

    def _replacement(self) -> list[dict[str, Any]]:
        for _ in range(min(getattr(self, "_tries", 0), len(self._fallback) if self._fallback is not None else 0)):
            example = self._fallback[self._cursor % len(self._fallback)]
            self._cursor += 1
            if record_id(example) in self.reader:
                return [example]
        raise ValueError("Every record of a batch was dropped by the teacher view when the cache was built, and no "
                         "replacement was found (set_fallback_dataset).")  # fmt: skip

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        kept = [example for example in examples if record_id(example) not in self.reader.dropped]
        dropped = len(examples) - len(kept)
        if dropped:
            stats = self.collator.stats
            stats["dropped_by_teacher_cache"] = stats.get("dropped_by_teacher_cache", 0) + dropped
        batch = self.collator(kept or self._replacement())
        cached = self.reader.batch(batch["record_ids"])
        for name in _VIEW_FIELDS:
            batch[f"teacher_{name}"] = getattr(cached, name)
        for field in fields(CachedTeacherBatch):
            value = getattr(cached, field.name)
            if isinstance(value, torch.Tensor) and field.name not in _VIEW_FIELDS:
                batch[CACHED_PREFIX + field.name] = value
        return batch


def cached_batch_from_inputs(teacher_inputs: dict[str, Any], record_ids: list[str]) -> CachedTeacherBatch:
    """Rebuild the :class:`CachedTeacherBatch` from the ``teacher_``-stripped keys a trainer popped from a batch
    (``input_ids``, ``attention_mask``, ``response_mask`` and the ``cached_<field>`` tensors)."""
    prefix = CACHED_PREFIX[len("teacher_") :]
    values: dict[str, Any] = {name: teacher_inputs[name] for name in _VIEW_FIELDS}
    for field in fields(CachedTeacherBatch):
        if f"{prefix}{field.name}" in teacher_inputs:
            values[field.name] = teacher_inputs[f"{prefix}{field.name}"]
    values.setdefault("hidden", None)
    return CachedTeacherBatch(record_ids=list(record_ids), **values)
