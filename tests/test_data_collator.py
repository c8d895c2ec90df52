"""DualViewCollator on the tiny Qwen3-VL student and LLaVA-NeXT (llava_v1) teacher processors."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from evl_kd_trainer.data.collator import DualViewCollator, truncation_length
from evl_kd_trainer.data.ecginstruct import load_ecginstruct
from evl_kd_trainer.data.templates import LLAVA_V1_SYSTEM
from evl_kd_trainer.testing import build_tiny_llava_next, build_tiny_qwen3_vl, make_ecg_like_image


@pytest.fixture(scope="module")
def student():
    return build_tiny_qwen3_vl()[1]


@pytest.fixture(scope="module")
def teacher():
    return build_tiny_llava_next()[1]


def _record(record_id="r1", size=(64, 48), q2="Is it normal?", a2="abnormal ECG"):
    return {
        "id": record_id,
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image", "text": None}, {"type": "text", "text": "What is the rhythm?"}],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "sinus rhythm"}]},
            {"role": "user", "content": [{"type": "text", "text": q2}]},
            {"role": "assistant", "content": [{"type": "text", "text": a2}]},
        ],
        "images": [make_ecg_like_image(seed=1, size=size)],
    }


def _label_spans(labels, tokenizer):
    """Decoded runs of labelled tokens, one string per contiguous span."""
    spans, start = [], None
    flags = (labels != -100).tolist() + [False]
    for position, flag in enumerate(flags):
        if flag and start is None:
            start = position
        elif not flag and start is not None:
            spans.append(tokenizer.decode(labels[start:position]))
            start = None
    return spans


def test_both_views_render_their_own_template_exactly(student, teacher):
    batch = DualViewCollator(student, teacher)([_record()])

    n_student = int(batch["image_grid_thw"][0].prod()) // 4  # Qwen3-VL: one token per 2x2 merged patches
    assert n_student == 4
    assert student.tokenizer.decode(batch["input_ids"][0]) == (
        "<|im_start|>user\n<|vision_start|>" + "<|image_pad|>" * n_student + "<|vision_end|>What is the rhythm?"
        "<|im_end|>\n<|im_start|>assistant\nsinus rhythm<|im_end|>\n"
        "<|im_start|>user\nIs it normal?<|im_end|>\n<|im_start|>assistant\nabnormal ECG<|im_end|>\n"
    )
    # The teacher's image token count is what its own processor gives this image (anyres crops + newlines).
    alone = teacher(text="<image>", images=[_record()["images"][0]], return_tensors="pt")
    n_teacher = int((alone["input_ids"] == teacher.image_token_id).sum())
    assert n_teacher > n_student
    # As original LLaVA tokenizes (the text after the image on its own): a word-boundary "▁" follows the image.
    assert teacher.tokenizer.decode(batch["teacher_input_ids"][0]) == (
        f"<s> {LLAVA_V1_SYSTEM} USER: " + "<image>" * n_teacher + " \nWhat is the rhythm? ASSISTANT: sinus rhythm</s>"
        "USER: Is it normal? ASSISTANT: abnormal ECG</s>"
    )
    # Each processor saw the image at its own resolution.
    assert batch["pixel_values"].shape[0] == int(batch["image_grid_thw"][0].prod())
    assert batch["teacher_pixel_values"].shape[:2] == (1, 5) and batch["teacher_image_sizes"].tolist() == [[48, 64]]
    # Qwen3-VL's rope index needs mm_token_type_ids: 1 exactly at the image pads.
    image_positions = batch["input_ids"] == student.image_token_id
    assert torch.equal(batch["mm_token_type_ids"].bool(), image_positions)


def test_labels_cover_exactly_the_answers_with_end_of_turn(student, teacher):
    batch = DualViewCollator(student, teacher)([_record()])
    # Qwen: the "\n" after <|im_end|> is labelled, as in TRL's Qwen-VL training templates' generation span.
    assert _label_spans(batch["labels"][0], student.tokenizer) == [
        "sinus rhythm<|im_end|>\n",
        "abnormal ECG<|im_end|>\n",
    ]
    assert _label_spans(batch["teacher_labels"][0], teacher.tokenizer) == ["sinus rhythm</s>", "abnormal ECG</s>"]
    for prefix in ("", "teacher_"):
        labels = batch[f"{prefix}labels"]
        assert batch[f"{prefix}response_mask"].dtype == torch.bool
        assert torch.equal(batch[f"{prefix}response_mask"], labels != -100)
        assert torch.equal(labels[labels != -100], batch[f"{prefix}input_ids"][labels != -100])


def test_batch_is_right_padded_with_each_tokenizers_pad_id(student, teacher):
    short = _record("short", size=(48, 64), q2="Rate?", a2="72")
    collator = DualViewCollator(student, teacher, pad_to_multiple_of=8)
    batch = collator([_record("long"), short])
    alone = [collator([example]) for example in (_record("long"), short)]
    for prefix, tokenizer in (("", student.tokenizer), ("teacher_", teacher.tokenizer)):
        ids, mask = batch[f"{prefix}input_ids"], batch[f"{prefix}attention_mask"]
        assert ids.shape[1] % 8 == 0
        for row, single in enumerate(alone):
            length = int(single[f"{prefix}attention_mask"].sum())
            assert torch.equal(ids[row, :length], single[f"{prefix}input_ids"][0, :length])
            assert mask[row, :length].all() and not mask[row, length:].any()
            assert (ids[row, length:] == tokenizer.pad_token_id).all()
            assert (batch[f"{prefix}labels"][row, length:] == -100).all()
        assert torch.equal(batch[f"{prefix}response_mask"], batch[f"{prefix}labels"] != -100)
    # Crops are padded to the batch's largest count: 48x64 (portrait) and 64x48 both give 5 here.
    assert batch["teacher_pixel_values"].shape[0] == 2
    assert batch["image_grid_thw"].shape == (2, 3)


def test_student_only_matches_trl_assistant_only_collator(student):
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    records = [_record("a"), _record("b", size=(96, 64), q2="Rate?", a2="72")]
    ours = DualViewCollator(student)(records)
    assert not any(key.startswith("teacher_") for key in ours)
    trl_records = [{"messages": r["messages"], "images": r["images"]} for r in _copy(records)]
    theirs = DataCollatorForVisionLanguageModeling(student, assistant_only_loss=True)(trl_records)
    for key in ("input_ids", "attention_mask", "labels", "pixel_values", "image_grid_thw", "mm_token_type_ids"):
        assert torch.equal(ours[key], theirs[key]), key


def _copy(records):
    return [{**r, "messages": json.loads(json.dumps(r["messages"]))} for r in records]


def _text(text):
    return [{"type": "text", "text": text}]


def _early_image_record():
    """Image first, long answer: student image pads at 5..8, first answer token at 21, 37 tokens."""
    return {
        "id": "early",
        "messages": [
            {"role": "user", "content": [{"type": "image"}, *_text("Rate?")]},
            {"role": "assistant", "content": _text("The heart rate is 72 bpm, sinus rhythm.")},
        ],
        "images": [make_ecg_like_image(seed=1, size=(64, 48))],
    }


def _late_image_record():
    """A text turn first, the image in the second user turn (student image pads at 53..56)."""
    return {
        "id": "late",
        "messages": [
            {"role": "user", "content": _text("Please interpret this 12-lead electrocardiogram image.")},
            {"role": "assistant", "content": _text("sinus bradycardia, first degree AV block")},
            {"role": "user", "content": [{"type": "image"}, *_text("Rate?")]},
            {"role": "assistant", "content": _text("72")},
        ],
        "images": [make_ecg_like_image(seed=2, size=(64, 48))],
    }


def _text_record():
    return {"id": "text", "messages": [{"role": "user", "content": "Rate?"}, {"role": "assistant", "content": "72"}]}


def _image_span(input_ids, image_token_id):
    positions = (input_ids == image_token_id).nonzero().flatten()
    return int(positions[0]), int(positions[-1])


def test_truncation_after_the_image_cuts_text_and_inside_an_image_drops(student, teacher, caplog):
    full = DualViewCollator(student, teacher)([_early_image_record(), _late_image_record()])
    early_ids, late_ids = full["input_ids"]
    max_length = 30
    # Preconditions of the scenario, so that the test checks what it says.
    assert _image_span(early_ids, student.image_token_id)[1] + 2 <= max_length  # early: pads + <|vision_end|> fit
    assert bool(full["response_mask"][0, :max_length].any())  # ... and part of its answer too
    assert int(full["attention_mask"][0].sum()) > max_length
    assert _image_span(late_ids, student.image_token_id)[0] >= max_length  # late: the cut falls before its image

    collator = DualViewCollator(student, teacher, max_length=max_length)
    with caplog.at_level(logging.WARNING):
        batch = collator([_early_image_record(), _late_image_record()])
    assert "record 'late'" in caplog.text and "image_cut" in caplog.text
    assert batch["input_ids"].shape == (1, max_length)
    assert torch.equal(batch["input_ids"][0], full["input_ids"][0, :max_length])
    assert torch.equal(batch["labels"][0], full["labels"][0, :max_length])
    assert torch.equal(batch["mm_token_type_ids"][0], full["mm_token_type_ids"][0, :max_length])
    assert torch.equal(batch["pixel_values"], full["pixel_values"][: int(full["image_grid_thw"][0].prod())])
    # The teacher view (no teacher_max_length) is untouched, and holds the same single sample.
    teacher_length = int(full["teacher_attention_mask"][0].sum())
    assert torch.equal(batch["teacher_input_ids"][0], full["teacher_input_ids"][0, :teacher_length])
    assert batch["teacher_pixel_values"].shape[0] == 1
    assert collator.num_dropped == 1 and collator.num_truncated == 1
    assert collator.stats == {
        "samples": 2,
        "truncated": 1,
        "student_truncated": 1,
        "dropped": 1,
        "dropped_image_cut": 1,
    }


def test_a_sample_cut_inside_the_teacher_image_is_dropped_from_both_views(student, teacher):
    full = DualViewCollator(student, teacher)([_early_image_record(), _text_record()])
    teacher_max_length = 150
    start, end = _image_span(full["teacher_input_ids"][0], teacher.image_token_id)
    assert start < teacher_max_length <= end
    assert int(full["teacher_attention_mask"][1].sum()) <= teacher_max_length

    collator = DualViewCollator(student, teacher, teacher_max_length=teacher_max_length)
    batch = collator([_early_image_record(), _text_record()])
    assert batch["input_ids"].shape[0] == batch["teacher_input_ids"].shape[0] == 1
    assert torch.equal(batch["input_ids"][0], full["input_ids"][1, : batch["input_ids"].shape[1]])
    assert "pixel_values" not in batch and "teacher_pixel_values" not in batch  # the kept sample has no image
    assert collator.stats["dropped_image_cut"] == 1 and collator.num_truncated == 0


def test_drop_mode_no_response_left_and_all_dropped(student, teacher):
    collator = DualViewCollator(student, teacher, max_length=20)
    # Cut after the image (pads end at 8) but before the answer (starts at 21): nothing to learn from.
    with pytest.raises(ValueError, match=r"All 1 samples of the batch were dropped.*'early'"):
        collator([_early_image_record()])
    assert collator.stats["dropped_no_response_left"] == 1

    dropper = DualViewCollator(student, max_length=30, truncation="drop")
    batch = dropper([_early_image_record(), _text_record()])
    assert batch["input_ids"].shape[0] == 1 and dropper.stats["dropped_too_long"] == 1
    assert dropper.num_truncated == 0


def test_loaded_records_collate_and_an_unreadable_image_fails_naming_the_record(student, teacher, tmp_path):
    make_ecg_like_image(seed=3).save(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    conversation = [{"from": "human", "value": "<image>\nRate?"}, {"from": "gpt", "value": "72"}]
    records = [
        {"id": "ecg-1", "image": "good.png", "conversations": conversation},
        {"id": "ecg-42", "image": "broken.png", "conversations": conversation},
    ]
    (tmp_path / "train.json").write_text(json.dumps(records))
    dataset = load_ecginstruct(tmp_path / "train.json", check_images="exists")  # stat only: loading succeeds
    collator = DualViewCollator(student, teacher, on_bad_image="error")  # the default skips and counts it
    batch = collator([dataset[0]])  # paths are decoded here, at collation time
    assert _label_spans(batch["labels"][0], student.tokenizer) == ["72<|im_end|>\n"]
    assert batch["teacher_pixel_values"].shape[0] == 1 and batch["image_grid_thw"].shape == (1, 3)
    with pytest.raises(ValueError, match=r"record 'ecg-42': cannot decode image 0 \(.*broken.png\)"):
        collator([dataset[1]])


def test_bad_configuration(student, teacher):
    with pytest.raises(ValueError, match="truncation"):
        DualViewCollator(student, truncation="middle")
    with pytest.raises(ValueError, match="generation"):
        DualViewCollator(student, chat_template="{{ messages }}")


def test_truncation_length_rules():
    ids = torch.tensor([1, 9, 9, 8, 2, 3, 4, 5])  # 9 = image token, 8 = vision end
    answer = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1], dtype=torch.bool)
    rule = {"image_token_id": 9, "vision_end_token_id": 8}
    assert truncation_length(ids, answer, max_length=None, **rule) == (8, None)
    assert truncation_length(ids, answer, max_length=8, **rule) == (8, None)
    assert truncation_length(ids, answer, max_length=7, **rule) == (7, None)
    assert truncation_length(ids, answer, max_length=7, mode="drop", **rule) == (None, "too_long")
    assert truncation_length(ids, answer, max_length=2, **rule) == (None, "image_cut")
    assert truncation_length(ids, answer, max_length=3, **rule) == (None, "image_cut")  # would orphan <vision_end>
    assert truncation_length(ids, answer, max_length=5, **rule) == (None, "no_response_left")
    assert truncation_length(ids, answer, max_length=6, **rule) == (6, None)


def _released_style(template: str) -> str:
    """A template as the Qwen-VL releases ship it: the same text, no {% generation %} markers."""
    return template.replace("{% generation %}", "").replace("{% endgeneration %}", "")


def test_released_qwen_template_without_markers_falls_back_to_the_marked_copy(caplog):
    from evl_kd_trainer.data.templates import QWEN_VL_CHAT_TEMPLATE

    marked = build_tiny_qwen3_vl()[1]
    released = build_tiny_qwen3_vl()[1]
    released.chat_template = _released_style(QWEN_VL_CHAT_TEMPLATE)
    with caplog.at_level(logging.WARNING):
        collator = DualViewCollator(released)
    assert "no {% generation %} block" in caplog.text and "'qwen_vl'" in caplog.text
    expected = DualViewCollator(marked)([_record()])
    batch = collator([_record()])
    assert torch.equal(batch["input_ids"], expected["input_ids"]) and torch.equal(batch["labels"], expected["labels"])
    # the processor's own template still serves generation
    assert released.chat_template == _released_style(QWEN_VL_CHAT_TEMPLATE)
    # an explicit template (name or Jinja) wins, and one without markers is still an error
    named = DualViewCollator(released, chat_template="qwen2_vl")([_record()])
    assert released.tokenizer.decode(named["input_ids"][0]).startswith(
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<|vision_start|>"
    )
    with pytest.raises(ValueError, match="generation"):
        DualViewCollator(released, chat_template=released.chat_template)


def test_qwen2_vl_family_gets_its_default_system_turn():
    from evl_kd_trainer.testing import build_tiny_qwen2_vl

    processor = build_tiny_qwen2_vl()[1]
    processor.chat_template = None
    batch = DualViewCollator(processor)([_record()])
    text = processor.tokenizer.decode(batch["input_ids"][0])
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
    assert _label_spans(batch["labels"][0], processor.tokenizer) == [
        "sinus rhythm<|im_end|>\n",
        "abnormal ECG<|im_end|>\n",
    ]


def test_llava_template_joins_text_around_a_mid_sentence_image(teacher):
    from evl_kd_trainer.data.messages import user_content_parts

    messages = [
        {"role": "user", "content": user_content_parts("Look at <image> and name the rhythm.")},
        {"role": "assistant", "content": [{"type": "text", "text": "sinus rhythm"}]},
    ]
    text = teacher.apply_chat_template(messages, tokenize=False)
    assert text == f"{LLAVA_V1_SYSTEM} USER: <image>\nLook at and name the rhythm. ASSISTANT: sinus rhythm</s>"


def test_qwen2_5_vl_renders_with_its_default_system_turn():
    from evl_kd_trainer.testing import build_tiny_qwen2_5_vl

    processor = build_tiny_qwen2_5_vl()[1]
    text = processor.tokenizer.decode(DualViewCollator(processor)([_record()])["input_ids"][0])
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")


def test_llava_template_is_replaced_only_when_missing(caplog):
    """A LLaVA-NeXT processor may wrap Mistral, Llama-3 or Qwen: its own unmarked template is not guessed at."""
    from evl_kd_trainer.data.templates import LLAVA_V1_CHAT_TEMPLATE

    student = build_tiny_qwen3_vl()[1]
    unmarked = build_tiny_llava_next()[1]
    unmarked.chat_template = _released_style(LLAVA_V1_CHAT_TEMPLATE)
    with pytest.raises(ValueError, match="teacher chat template has no"):
        DualViewCollator(student, unmarked)
    missing = build_tiny_llava_next()[1]
    missing.chat_template = None
    with caplog.at_level(logging.WARNING):
        batch = DualViewCollator(student, missing)([_record()])
    assert "'llava_v1'" in caplog.text and "Vicuna" in caplog.text
    assert missing.tokenizer.decode(batch["teacher_input_ids"][0]).startswith(f"<s> {LLAVA_V1_SYSTEM} USER: <image>")
    # an explicit template by name wins over the processor's
    named = DualViewCollator(student, unmarked, teacher_chat_template="llava_v1")([_record()])
    assert torch.equal(named["teacher_input_ids"], batch["teacher_input_ids"])
