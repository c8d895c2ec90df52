"""Fuzz: one epoch of `EVLDistillTrainer` over a seeded hostile corpus (issue-style fault classes mixed with good
records): no crash, no non-finite loss, every bad record counted under its reason, every good record trained."""

from __future__ import annotations

import math
from typing import Any

import pytest

from evl_kd_trainer.data.ecginstruct import load_ecginstruct
from evl_kd_trainer.testing import build_tiny_llava_next, build_tiny_qwen3_vl, write_hostile_corpus
from evl_kd_trainer.trainer import EVLDistillConfig, EVLDistillTrainer


class CountingCollator:
    """Passes batches through unchanged and counts the samples that reach the model."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.trained = 0

    @property
    def stats(self) -> dict[str, int]:
        return self.inner.stats

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.inner(examples)
        self.trained += int(batch["input_ids"].shape[0])
        return batch


def test_one_epoch_over_a_hostile_corpus_trains_every_good_record_and_counts_every_bad_one(tmp_path):
    corpus = write_hostile_corpus(tmp_path / "corpus", seed=0)
    assert corpus.num_records >= 150
    dataset, report = load_ecginstruct(
        corpus.files, image_root=corpus.image_root, skip_invalid=True, return_report=True
    )
    # every record refused at load is counted under its reason
    assert dict(report.skipped) == corpus.expected_skipped
    assert len(dataset) == len(corpus.loaded_ids) and report.num_loaded == len(corpus.loaded_ids)

    student, student_processor = build_tiny_qwen3_vl(seed=0)
    teacher, teacher_processor = build_tiny_llava_next(seed=1)
    args = EVLDistillConfig(
        output_dir=str(tmp_path / "run"), num_train_epochs=1, per_device_train_batch_size=4, learning_rate=1e-4,
        bf16=False, use_cpu=True, gradient_checkpointing=False, report_to="none", save_strategy="no",
        disable_tqdm=True, logging_steps=1, seed=0, dataloader_drop_last=False,
    )  # fmt: skip
    trainer = EVLDistillTrainer(
        student,
        teacher_model=teacher,
        args=args,
        train_dataset=dataset,
        processing_class=student_processor,
        teacher_processing_class=teacher_processor,
    )
    counting = CountingCollator(trainer.data_collator)
    trainer.data_collator = counting
    result = trainer.train()

    logs = [entry for entry in trainer.state.log_history if "ce_loss" in entry]
    assert logs and all(math.isfinite(entry[key]) for entry in logs for key in ("loss", "ce_loss", "ot_loss"))
    assert math.isfinite(result.training_loss) and getattr(trainer, "skipped_nonfinite_steps", 0) == 0
    stats = counting.stats
    # images that only fail when decoded are dropped at collation and counted; everything else is trained
    assert stats.get("dropped_bad_image", 0) == len(corpus.bad_at_collate_ids)
    assert counting.trained == corpus.num_good
    # special-token text is escaped (and trained), over-long answers are cut to the context (and trained)
    assert stats.get("escaped_special_text", 0) >= len(corpus.special_text_ids) > 0
    assert stats.get("truncated", 0) >= len(corpus.long_ids) > 0


def test_a_batch_whose_every_sample_is_dropped_is_replaced_not_fatal(tmp_path):
    """Batch size 1 and images that only fail when decoded: each such batch is replaced by the next good sample."""
    corpus = write_hostile_corpus(tmp_path / "corpus", seed=0)
    dataset = load_ecginstruct(corpus.files, image_root=corpus.image_root, skip_invalid=True)
    bad = set(corpus.bad_at_collate_ids)
    keep = [i for i, record_id in enumerate(corpus.loaded_ids) if record_id in bad]
    keep += [i for i, record_id in enumerate(corpus.loaded_ids) if record_id not in bad][:4]
    subset = dataset.select(sorted(keep))
    student, student_processor = build_tiny_qwen3_vl(seed=0)
    teacher, teacher_processor = build_tiny_llava_next(seed=1)
    args = EVLDistillConfig(
        output_dir=str(tmp_path / "run"), num_train_epochs=1, per_device_train_batch_size=1, bf16=False,
        use_cpu=True, gradient_checkpointing=False, report_to="none", save_strategy="no", disable_tqdm=True,
        logging_steps=1,
    )  # fmt: skip
    trainer = EVLDistillTrainer(
        student,
        teacher_model=teacher,
        args=args,
        train_dataset=subset,
        processing_class=student_processor,
        teacher_processing_class=teacher_processor,
    )
    trainer.train()
    assert trainer.state.global_step == len(subset) == len(bad) + 4
    stats = trainer.data_collator.stats
    assert stats["dropped_bad_image"] >= len(bad) and stats["replaced_empty_batch"] == len(bad)


def test_without_a_fallback_an_empty_batch_is_still_an_error(tmp_path):
    from evl_kd_trainer.data.collator import DualViewCollator

    corpus = write_hostile_corpus(tmp_path / "corpus", seed=0)
    dataset = load_ecginstruct(corpus.files, image_root=corpus.image_root, skip_invalid=True)
    bad_index = corpus.loaded_ids.index(corpus.bad_at_collate_ids[0])
    collator = DualViewCollator(build_tiny_qwen3_vl(seed=0)[1])
    with pytest.raises(ValueError, match="All 1 samples of the batch were dropped"):
        collator([dataset[bad_index]])
    collator.set_fallback_dataset(dataset)
    batch = collator([dataset[bad_index]])
    assert batch["input_ids"].shape[0] == 1 and collator.stats["replaced_empty_batch"] == 1
