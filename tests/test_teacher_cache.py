"""The teacher-feature cache on a tiny PULSE-like teacher: what is read back equals the live teacher's forward on
the same collated batch, a killed build resumes, and a cache that does not fit the run is refused by name."""

from __future__ import annotations

import os

import pytest
import torch

from evl_kd_trainer.cache import TeacherCacheReader, build_teacher_cache, run_fingerprint
from evl_kd_trainer.cache.manifest import MANIFEST, SHARD_DIR
from evl_kd_trainer.models import get_adapter
from tests.teacher_cache_helpers import live_teacher, make_args, tiny_world


@pytest.fixture(scope="module")
def world():
    return tiny_world(n=8)


def build(world, directory, args, **options):
    options = {"compression": "fp32", "batch_size": 4, "progress": False, **options}
    return build_teacher_cache(
        directory, world["dataset"], world["teacher"], world["teacher_processor"], args,
        student_processor=world["student_processor"], **options,
    )  # fmt: skip


@pytest.fixture(scope="module")
def fp32_cache(world, tmp_path_factory):
    root = tmp_path_factory.mktemp("fp32")
    args = make_args(root)
    result = build(world, root / "cache", args, shard_size=2, batch_size=2)
    return root / "cache", args, result


def test_reader_equals_the_live_teacher_on_the_same_batch(world, fp32_cache):
    directory, args, result = fp32_cache
    assert result.records == 8 and result.written == 8 and not result.dropped
    reader = TeacherCacheReader(directory)
    for rows in ([0, 1], [5, 2, 7]):  # a batch the cache was built with, and one it never saw
        inputs, store, ids = live_teacher(world, args, rows)
        cached = reader.batch(ids)
        assert cached.record_ids == ids == [f"rec-{i}" for i in rows]
        for name in ("input_ids", "attention_mask", "response_mask"):
            assert torch.equal(getattr(cached, name), inputs[name]), name
            assert getattr(cached, name).dtype == inputs[name].dtype, name
        attention = inputs["attention_mask"].bool()
        assert torch.equal(cached.hidden_mask, attention)  # kd_token_scope="all": every real token
        assert cached.hidden.shape == store.hidden.shape and cached.hidden.dtype == store.hidden.dtype
        torch.testing.assert_close(cached.hidden, store.hidden * attention[..., None], rtol=0, atol=1e-6)
        if rows == [0, 1]:  # the very batch of the build: bit for bit
            assert torch.equal(cached.hidden, store.hidden * attention[..., None])
        live_visual, live_mask = store.padded_visual()
        visual, mask = cached.padded_visual()
        assert torch.equal(mask, live_mask) and visual.shape == live_visual.shape
        torch.testing.assert_close(visual, live_visual, rtol=0, atol=1e-6)
        assert torch.equal(cached.image_mask, reader.adapter.image_token_mask(inputs["input_ids"]))
    # built from the cached config.json alone, no teacher weights
    live_adapter = get_adapter(world["teacher"])
    assert reader.dims == live_adapter.dims and reader.adapter.image_token_id == live_adapter.image_token_id


def test_a_bf16_teacher_is_cached_losslessly_in_bf16(tmp_path):
    world = tiny_world(n=4, teacher_dtype=torch.bfloat16)
    args = make_args(tmp_path)
    build(world, tmp_path / "cache", args, compression="bf16")
    reader = TeacherCacheReader(tmp_path / "cache")
    assert reader.dtype == torch.bfloat16
    inputs, store, ids = live_teacher(world, args, [0, 1, 2, 3])
    cached = reader.batch(ids)
    assert store.hidden.dtype == torch.bfloat16
    assert torch.equal(cached.hidden, store.hidden * inputs["attention_mask"].bool()[..., None])
    assert torch.equal(cached.padded_visual()[0], store.padded_visual()[0])


def test_bf16_storage_of_an_fp32_teacher_is_its_bf16_rounding(world, tmp_path):
    args = make_args(tmp_path)
    build(world, tmp_path / "cache", args, compression="bf16")
    inputs, store, ids = live_teacher(world, args, [0, 1, 2, 3])
    cached = TeacherCacheReader(tmp_path / "cache", dtype=torch.bfloat16).batch(ids)
    expected = (store.hidden * inputs["attention_mask"].bool()[..., None]).to(torch.bfloat16)
    assert torch.equal(cached.hidden, expected)
    fp32 = TeacherCacheReader(tmp_path / "cache").batch(ids)  # read back in the teacher's dtype
    assert fp32.hidden.dtype == torch.float32
    rel = (fp32.hidden - store.hidden * inputs["attention_mask"].bool()[..., None]).abs() / store.hidden.abs()
    assert float(rel[inputs["attention_mask"].bool()].max()) <= 2**-8  # bf16 keeps 8 significant bits


def test_response_scope_stores_only_the_answer_tokens(world, tmp_path):
    args = make_args(tmp_path, kd_token_scope="response", lambda_ot=0.0)
    build(world, tmp_path / "cache", args)
    reader = TeacherCacheReader(tmp_path / "cache")
    assert reader.features.hidden_positions == "response" and not reader.features.visual
    inputs, store, ids = live_teacher(world, args, [0, 3])
    cached = reader.batch(ids)
    response = inputs["response_mask"]
    assert torch.equal(cached.hidden_mask, response) and response.sum() < inputs["attention_mask"].sum() / 3
    # (another batch composition than the build's: padding changes the kernels' blocking, not the values)
    torch.testing.assert_close(cached.hidden, store.hidden * response[..., None], rtol=0, atol=1e-6)
    assert cached.visual is None
    with pytest.raises(ValueError, match="no visual tokens"):
        cached.padded_visual()


def _mtimes(directory):
    return {p.name: p.stat().st_mtime_ns for p in (directory / SHARD_DIR).iterdir()}


def test_a_killed_build_resumes_keeping_finished_shards(world, tmp_path):
    args = make_args(tmp_path)
    directory = tmp_path / "cache"
    build(world, directory, args, shard_size=2, batch_size=2)
    shards = sorted((directory / SHARD_DIR).iterdir())
    assert [p.name for p in shards] == [f"p000-00000{i}.safetensors" for i in range(4)]
    complete = TeacherCacheReader(directory).batch([f"rec-{i}" for i in range(8)])
    # The kill: the last shard was being written (a .tmp is left), the manifest was never written.
    last = shards[-1]
    last.rename(last.with_name(last.name + ".tmp"))
    (directory / MANIFEST).unlink()
    kept = _mtimes(directory)
    with pytest.raises(FileNotFoundError, match="never finished"):
        TeacherCacheReader(directory)
    calls = []
    hook = world["teacher"].model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        result = build(world, directory, args, shard_size=2, batch_size=2)
    finally:
        hook.remove()
    assert len(calls) == 1 and result.written == 2 and result.records == 8  # only the lost shard's 2 records
    after = _mtimes(directory)
    assert not [name for name in after if name.endswith(".tmp")]
    for name, mtime in kept.items():
        if not name.endswith(".tmp"):
            assert after[name] == mtime, f"{name} was rewritten"
    resumed = TeacherCacheReader(directory).batch([f"rec-{i}" for i in range(8)])
    assert torch.equal(resumed.hidden, complete.hidden) and torch.equal(resumed.visual, complete.visual)
    # A complete cache reruns to nothing.
    assert build(world, directory, args, shard_size=2, batch_size=2).written == 0


def test_a_cache_of_other_settings_is_refused_naming_the_field(world, fp32_cache, tmp_path):
    directory, args, _ = fp32_cache
    other = make_args(tmp_path, teacher_max_length=700)
    with pytest.raises(ValueError, match="fingerprint field 'teacher_max_length'"):
        build(world, directory, other)
    expected = run_fingerprint(args, world["teacher"], world["teacher_processor"], world["student_processor"])
    TeacherCacheReader.open(directory, expected_fingerprint=expected)  # the run it was built for passes
    changed_runs = {
        "chat_template": make_args(tmp_path, teacher_chat_template="{% generation %}{{ messages }}{% endgeneration %}"),
        "features": make_args(tmp_path, teacher_hidden_layer=0),
    }
    for field, run_args in changed_runs.items():
        fingerprint = run_fingerprint(
            run_args, world["teacher"], world["teacher_processor"], world["student_processor"]
        )
        with pytest.raises(ValueError, match=f"fingerprint field '{field}'"):
            TeacherCacheReader.open(directory, expected_fingerprint=fingerprint)
    # a cache of every position serves a run on the answer tokens only
    narrower = make_args(tmp_path, kd_token_scope="response")
    fingerprint = run_fingerprint(narrower, world["teacher"], world["teacher_processor"], world["student_processor"])
    TeacherCacheReader.open(directory, expected_fingerprint=fingerprint)
    # other teacher weights of the same architecture
    from evl_kd_trainer.testing import build_tiny_llava_next

    retrained, _ = build_tiny_llava_next(seed=2, flat=True)
    fingerprint = run_fingerprint(args, retrained, world["teacher_processor"], world["student_processor"])
    with pytest.raises(ValueError, match="fingerprint field 'teacher_weights'"):
        TeacherCacheReader(directory).check([], expected_fingerprint=fingerprint)


def test_missing_records_are_named_before_training(fp32_cache):
    directory, _, _ = fp32_cache
    reader = TeacherCacheReader(directory)
    assert reader.check([f"rec-{i}" for i in range(8)]) == []
    with pytest.raises(ValueError, match=r"3 record\(s\) .*not in the cache: 'new-1', 'new-2', 'new-3'"):
        reader.check(["rec-0", "new-1", "rec-1", "new-2", "new-3"])
    with pytest.raises(KeyError, match="'new-1' is not in the cache"):
        reader.batch(["rec-0", "new-1"])


def test_records_the_teacher_view_drops_are_recorded_not_missing(world, tmp_path):
    # Room for the smallest images' tokens only: the larger images cannot be cut after their image, so they drop.
    lengths = [int(live_teacher(world, make_args(tmp_path), [i])[0]["attention_mask"].sum()) for i in range(4)]
    limit = min(lengths) + 1
    args = make_args(tmp_path, teacher_max_length=limit)
    result = build(world, tmp_path / "cache", args)
    expected = {f"rec-{i}" for i in range(8) if lengths[i % 4] > limit}
    assert set(result.dropped) == expected and result.records == 8 - len(expected) and expected
    assert set(result.dropped.values()) <= {"image_cut", "no_response_left"}
    reader = TeacherCacheReader(tmp_path / "cache")
    assert sorted(reader.check([f"rec-{i}" for i in range(8)])) == sorted(expected)
    assert build(world, tmp_path / "cache", args).written == 0  # dropped records are not retried
    # Training from the cache drops them too, before the student view is rendered.
    from evl_kd_trainer.cache import TeacherCacheCollator
    from evl_kd_trainer.data.collator import DualViewCollator

    collator = TeacherCacheCollator(DualViewCollator(world["student_processor"], return_record_ids=True), reader)
    batch = collator([world["dataset"][i] for i in range(4)])
    assert batch["record_ids"] == [f"rec-{i}" for i in range(4) if f"rec-{i}" not in expected]
    assert collator.stats["dropped_by_teacher_cache"] == len([i for i in range(4) if f"rec-{i}" in expected])


def test_prefetch_reads_ahead_in_order(fp32_cache):
    directory, _, _ = fp32_cache
    reader = TeacherCacheReader(directory)
    plan = [["rec-3", "rec-1"], ["rec-0"], ["rec-7", "rec-6", "rec-5"]]
    for ids, cached in zip(plan, reader.prefetch(plan, depth=2), strict=True):
        assert cached.record_ids == ids
        assert torch.equal(cached.hidden, reader.batch(ids).hidden)
    with pytest.raises(KeyError, match="nope"):
        list(reader.prefetch([["rec-0"], ["nope"]]))


def test_records_without_ids_are_keyed_by_content(world, tmp_path):
    dataset = world["dataset"].remove_columns("id").select(range(3))
    args = make_args(tmp_path)
    local = {**world, "dataset": dataset}
    result = build(local, tmp_path / "cache", args)
    reader = TeacherCacheReader(tmp_path / "cache")
    from evl_kd_trainer.cache.ids import record_id

    ids = [record_id(dataset[i]) for i in range(3)]
    assert result.records == 3 and all(i.startswith("sha1-") for i in ids) and len(set(ids)) == 3
    assert reader.check(ids) == []
    assert os.path.isdir(tmp_path / "cache" / "teacher")
