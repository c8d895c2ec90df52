"""Unset `max_length` / `teacher_max_length` default to each model's context, so one huge answer is cut (and
counted) by the collator before any forward instead of making the teacher's attention allocate gigabytes."""

from __future__ import annotations

from datasets import Dataset
from transformers import PretrainedConfig

from evl_kd_trainer.data.collator import DualViewCollator
from evl_kd_trainer.data.lengths import context_length, resolve_max_lengths
from evl_kd_trainer.testing import build_tiny_llava_next, build_tiny_qwen3_vl, make_ecg_like_image
from evl_kd_trainer.trainer import EVLDistillConfig, EVLDistillTrainer

ARGS = dict(
    per_device_train_batch_size=2,
    bf16=False,
    gradient_checkpointing=False,
    use_cpu=True,
    report_to="none",
    save_strategy="no",
    logging_steps=1,
    max_steps=1,
    disable_tqdm=True,
)


def _dataset(answers):
    messages = [
        [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Explain this ECG."}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ]
        for answer in answers
    ]
    images = [[make_ecg_like_image(seed=i)] for i in range(len(answers))]
    return Dataset.from_dict({"id": [f"r{i}" for i in range(len(answers))], "messages": messages, "images": images})


def test_context_length_reads_the_text_config():
    student, teacher = build_tiny_qwen3_vl()[0], build_tiny_llava_next()[0]
    assert context_length(student) == student.config.text_config.max_position_embeddings == 1024
    assert context_length(teacher.config) == 1024
    assert context_length(PretrainedConfig()) is None
    assert resolve_max_lengths(None, None, student, teacher) == (1024, 1024)
    assert resolve_max_lengths(300, 200, student, teacher) == (300, 200)
    assert resolve_max_lengths(None, None, student) == (1024, None)  # no teacher view: nothing to bound
    assert resolve_max_lengths(None, None, PretrainedConfig()) == (None, None)


def test_an_unset_teacher_limit_is_the_teachers_context_and_a_huge_answer_is_cut(tmp_path):
    student, teacher = build_tiny_qwen3_vl(seed=0), build_tiny_llava_next(seed=1)
    dataset = _dataset(["sinus rhythm " * 1500, "sinus rhythm"])  # a 20k-character answer
    unlimited = DualViewCollator(student[1], teacher_processor=teacher[1])([dataset[0]])
    assert unlimited["teacher_input_ids"].shape[1] > 2 * 1024  # what reached the teacher before

    args = EVLDistillConfig(output_dir=str(tmp_path / "out"), max_length=None, **ARGS)
    assert args.teacher_max_length is None
    trainer = EVLDistillTrainer(
        student[0],
        teacher_model=teacher[0],
        args=args,
        train_dataset=dataset,
        processing_class=student[1],
        teacher_processing_class=teacher[1],
    )
    collator = trainer.data_collator
    assert [view.max_length for view in collator.views] == [1024, 1024]
    batch = collator([dataset[0], dataset[1]])
    assert batch["input_ids"].shape[1] == 1024 and batch["teacher_input_ids"].shape[1] == 1024
    assert collator.stats["student_truncated"] == 1 and collator.stats["teacher_truncated"] == 1
    assert bool(batch["teacher_response_mask"][0].any())  # the cut keeps the image and part of the answer


def test_explicit_limits_are_kept(tmp_path):
    student, teacher = build_tiny_qwen3_vl(seed=0), build_tiny_llava_next(seed=1)
    trainer = EVLDistillTrainer(
        student[0],
        teacher_model=teacher[0],
        args=EVLDistillConfig(output_dir=str(tmp_path / "out"), max_length=256, teacher_max_length=300, **ARGS),
        train_dataset=_dataset(["a", "b"]),
        processing_class=student[1],
        teacher_processing_class=teacher[1],
    )
    assert [view.max_length for view in trainer.data_collator.views] == [256, 300]
