"""Record ids (the cache's keys) are stable, the collator hands them through its drops and replacements, and the
cache collator serves a student-view batch its cached teacher features."""

from __future__ import annotations

import pickle

import pytest
import torch
from datasets import Dataset

from evl_kd_trainer.cache import TeacherCacheCollator, TeacherCacheReader, build_teacher_cache, record_id
from evl_kd_trainer.cache.collator import cached_batch_from_inputs
from evl_kd_trainer.cache.ids import content_hash
from evl_kd_trainer.data.collator import DualViewCollator
from evl_kd_trainer.testing import make_ecg_like_image
from tests.teacher_cache_helpers import live_teacher, make_args, tiny_world


@pytest.fixture(scope="module")
def world():
    return tiny_world(n=8)


def test_ids_are_the_id_field_or_a_content_hash_that_ignores_arrow_nulls(world):
    row = world["dataset"][0]
    assert record_id(row) == "rec-0"
    plain = {
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "q"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "a"}]},
        ],
        "images": [make_ecg_like_image(seed=3)],
    }
    arrow = Dataset.from_list([plain])[0]  # Arrow adds {"text": None} to the image part
    assert arrow["messages"][0]["content"][0] == {"type": "image", "text": None}
    assert record_id(arrow) == record_id(plain) == content_hash(plain) and record_id(plain).startswith("sha1-")
    other_image = {**plain, "images": [make_ecg_like_image(seed=4)]}
    other_text = {**plain, "messages": [plain["messages"][0], {"role": "assistant", "content": "b"}]}
    by_path = {**plain, "images": ["images/ecg3.png"]}
    assert len({record_id(x) for x in (plain, other_image, other_text, by_path)}) == 4
    assert record_id({**plain, "id": ""}) == record_id(plain)  # an empty id is no id


def test_collator_passes_the_ids_of_the_rows_it_keeps(world, tmp_path):
    dataset = world["dataset"]
    default = DualViewCollator(world["student_processor"], teacher_processor=world["teacher_processor"])
    assert "record_ids" not in default([dataset[0]])  # off by default: batches are unchanged
    args = make_args(tmp_path)
    lengths = [int(live_teacher(world, args, [i])[0]["attention_mask"].sum()) for i in range(4)]
    limit = min(lengths) + 1  # room for the smallest image's view only: the others are dropped
    collator = DualViewCollator(
        world["student_processor"], teacher_processor=world["teacher_processor"], return_record_ids=True,
        teacher_max_length=limit,
    )  # fmt: skip
    batch = collator([dataset[i] for i in range(4)])
    kept = [f"rec-{i}" for i in range(4) if lengths[i] <= limit]
    assert batch["record_ids"] == kept and batch["input_ids"].shape[0] == len(kept) < 4
    long_rows = [i for i in range(4) if lengths[i] > limit]
    collator.set_fallback_dataset(dataset)
    replaced = collator([dataset[long_rows[0]]])  # every sample dropped: the first one that encodes replaces it
    assert replaced["record_ids"] == [kept[0]] and collator.stats["replaced_empty_batch"] == 1


def test_one_id_on_two_different_records_is_refused(world, tmp_path):
    dataset = world["dataset"].select(range(3))
    clash = dataset.map(lambda row, i: {"id": "same" if i < 2 else row["id"]}, with_indices=True)
    with pytest.raises(ValueError, match="record id 'same' names two different records \\(rows 0 and 1\\)"):
        build_teacher_cache(tmp_path / "c", clash, world["teacher"], world["teacher_processor"], make_args(tmp_path),
                            progress=False)  # fmt: skip


def test_cache_collator_gives_a_student_batch_its_teacher_features(world, tmp_path):
    args = make_args(tmp_path)
    build_teacher_cache(
        tmp_path / "cache", world["dataset"], world["teacher"], world["teacher_processor"], args,
        student_processor=world["student_processor"], compression="fp32", progress=False,
    )  # fmt: skip
    reader = TeacherCacheReader(tmp_path / "cache")
    student_view = DualViewCollator(world["student_processor"], return_record_ids=True)
    collator = TeacherCacheCollator(student_view, reader)
    loader = torch.utils.data.DataLoader(world["dataset"], batch_size=3, collate_fn=collator, shuffle=False)
    batch = next(iter(loader))
    assert batch["record_ids"] == ["rec-0", "rec-1", "rec-2"]
    student_only = student_view([world["dataset"][i] for i in range(3)])
    assert torch.equal(batch["input_ids"], student_only["input_ids"])  # the student view as it was
    # What a trainer pops: every teacher_* key, then the record ids.
    teacher_inputs = {k[len("teacher_") :]: batch.pop(k) for k in list(batch) if k.startswith("teacher_")}
    rebuilt = cached_batch_from_inputs(teacher_inputs, batch.pop("record_ids"))
    direct = reader.batch(["rec-0", "rec-1", "rec-2"])
    for name in ("input_ids", "attention_mask", "response_mask", "hidden", "hidden_mask", "visual", "visual_mask"):
        assert torch.equal(getattr(rebuilt, name), getattr(direct, name)), name
    inputs, store, _ = live_teacher(world, args, [0, 1, 2])
    assert torch.equal(rebuilt.teacher_inputs()["input_ids"], inputs["input_ids"])
    assert not any(k.startswith("teacher_") or k == "record_ids" for k in batch)
    # DataLoader workers: forked ones open their own shard files, spawned ones get a pickled copy.
    workers = torch.utils.data.DataLoader(
        world["dataset"], batch_size=4, collate_fn=collator, num_workers=2, multiprocessing_context="fork"
    )
    for batch in workers:
        expected = reader.batch(batch["record_ids"])
        assert torch.equal(batch["teacher_cached_hidden"], expected.hidden) and len(batch["record_ids"]) == 4
    copy = pickle.loads(pickle.dumps(collator))
    assert torch.equal(copy([world["dataset"][7]])["teacher_cached_hidden"], reader.batch(["rec-7"]).hidden)
