"""Teacher-feature cache: run the teacher once over a dataset, then distil from its stored features.

Building: ``evl-kd cache-teacher --recipe RECIPE --output DIR`` (:func:`build_teacher_cache`). Reading:
:class:`TeacherCacheReader` (by record id, padded like the live teacher path) and :class:`TeacherCacheCollator`
(the reads done in the data loader). What is stored is what the run's ``kd_method`` reads
(:func:`features_for`); :func:`run_fingerprint` is the check a run makes before it trusts a cache.
"""

from __future__ import annotations

from evl_kd_trainer.lazy import lazy_getattr

_LAZY_EXPORTS: dict[str, str] = {
    "CacheArguments": "evl_kd_trainer.cache.arguments",
    "CachedTeacherBatch": "evl_kd_trainer.cache.batch",
    "CacheBuildResult": "evl_kd_trainer.cache.writer",
    "TeacherCacheCollator": "evl_kd_trainer.cache.collator",
    "TeacherCacheReader": "evl_kd_trainer.cache.reader",
    "TeacherFeatureSet": "evl_kd_trainer.cache.request",
    "build_teacher_cache": "evl_kd_trainer.cache.writer",
    "features_for": "evl_kd_trainer.cache.request",
    "record_id": "evl_kd_trainer.cache.ids",
    "run_fingerprint": "evl_kd_trainer.cache.settings",
}

__all__ = list(_LAZY_EXPORTS)

__getattr__ = lazy_getattr(__name__, _LAZY_EXPORTS)
