"""Teacher-cache paths the benchmarks rely on: training with no teacher at all (neither a model nor a path), and a
PCA cache of a method that stores no visual tokens (one basis only)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from evl_kd_trainer.cache import TeacherCacheReader, build_teacher_cache
from evl_kd_trainer.trainer import EVLDistillTrainer
from tests.teacher_cache_helpers import make_args, tiny_world

TRAIN = dict(max_steps=2, per_device_train_batch_size=2, logging_steps=1, learning_rate=1e-3, seed=3)


@pytest.fixture(scope="module")
def world():
    return tiny_world(n=4)


def _build(world, tmp_path, method, compression):
    args = make_args(tmp_path / "build", kd_method=method)
    out = tmp_path / f"cache-{method}-{compression.replace(':', '')}"
    build_teacher_cache(
        out, world["dataset"], world["teacher"], world["teacher_processor"], args,
        student_processor=world["student_processor"], compression=compression, batch_size=2, progress=False,
        pca_fit_samples=4,
    )  # fmt: skip
    return str(out)


def _train(world, tmp_path, name, method, teacher, cache_dir=None):
    args = make_args(tmp_path / name, kd_method=method, teacher_cache_dir=cache_dir, **TRAIN)
    torch.manual_seed(0)
    trainer = EVLDistillTrainer(
        copy.deepcopy(world["student"]),
        teacher_model=teacher,
        args=args,
        train_dataset=world["dataset"],
        processing_class=world["student_processor"],
        teacher_processing_class=world["teacher_processor"] if teacher is not None else None,
    )
    trainer.train()
    return trainer, [e for e in trainer.state.log_history if "ce_loss" in e]


def test_a_cache_trains_without_any_teacher(world, tmp_path):
    """No teacher model and no teacher path: the cache's own teacher record (config, processor) is trusted and the
    losses are the live teacher's (fp32 cache)."""
    cache = _build(world, tmp_path, "evl", "fp32")
    _, live = _train(world, tmp_path, "live", "evl", world["teacher"])
    trainer, cached = _train(world, tmp_path, "cached", "evl", None, cache_dir=cache)
    assert trainer.teacher_model is None and trainer.teacher_cache is not None
    assert len(live) == len(cached) == 2
    for a, b in zip(live, cached, strict=True):
        for term in ("ce_loss", "mhca_loss", "rel_loss", "ot_loss"):
            assert b[term] == pytest.approx(a[term], rel=1e-5, abs=1e-5), term


def test_pca_cache_of_a_method_without_visual_tokens(world, tmp_path):
    """ULD stores hidden states only: its PCA cache has one basis, and reads back and trains."""
    cache = _build(world, tmp_path, "uld", "pca:8")
    reader = TeacherCacheReader(cache, dtype=torch.float32)
    assert set(reader.pca) == {"hidden"}
    batch = reader.batch(["rec-0", "rec-1"])
    assert batch.hidden.shape[-1] == world["teacher"].config.text_config.hidden_size
    _, logs = _train(world, tmp_path, "cached", "uld", world["teacher"], cache_dir=cache)
    assert len(logs) == 2 and all(math.isfinite(e["uld_loss"]) and e["uld_loss"] > 0 for e in logs)
