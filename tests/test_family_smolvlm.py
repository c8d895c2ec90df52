"""The SmolVLM family (one file, ``models/families/smolvlm.py``) on a tiny offline SmolVLM: lookup, visual-token
capture, chat template and labels, processor checks, distillation from the tiny PULSE-like teacher through
``EVLDistillTrainer``, and evaluation generation."""

from __future__ import annotations

import logging
import math
from collections import Counter

import pytest
import torch

from evl_kd_trainer.data.collator import DualViewCollator
from evl_kd_trainer.data.templates import get_chat_template
from evl_kd_trainer.eval.generate import BatchGenerator, resolve_chat_template
from evl_kd_trainer.eval.records import EvalRecord
from evl_kd_trainer.models import (
    capture_features,
    find_family,
    find_family_for_processor,
    get_adapter,
    load_model,
    load_processor,
    supported_model_types,
)
from evl_kd_trainer.models.families.smolvlm import (
    SMOLVLM_CHAT_TEMPLATE,
    SmolVLMAdapter,
    SmolVLMImageOnlyProcessor,
    crops_per_image,
    visual_tokens_per_image,
)
from evl_kd_trainer.testing import build_tiny_llava_next, make_ecg_like_image, make_tiny_vlm_dataset
from evl_kd_trainer.testing.smolvlm import build_tiny_smolvlm
from evl_kd_trainer.trainer import EVLDistillConfig, EVLDistillTrainer

SIZES = ((64, 48), (100, 40))  # a 2 x 2 grid (+ global view) and a 1 x 2 strip (+ global view)


def _user(text="What is the rhythm?"):
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


def _batch(processor, sizes=SIZES):
    text = processor.apply_chat_template(_user(), tokenize=False, add_generation_prompt=True)
    images = [make_ecg_like_image(i, size) for i, size in enumerate(sizes)]
    return processor(text=[text] * len(images), images=images, return_tensors="pt", padding=True), images


def test_family_lookup_dims_and_modules():
    model, processor = build_tiny_smolvlm()
    assert "smolvlm" in supported_model_types()
    assert find_family(model).name == "smolvlm" == find_family_for_processor(processor).name
    adapter = get_adapter(model)
    assert type(adapter) is SmolVLMAdapter
    assert adapter.dims.hidden_size == adapter.dims.visual_width == model.config.text_config.hidden_size == 64
    assert adapter.dims.vocab_size == model.get_output_embeddings().weight.shape[0] == len(processor.tokenizer)
    assert adapter.language_model(model) is model.model.text_model
    assert adapter.num_layers == len(adapter.decoder_layers(model)) == 2
    assert adapter.get_lm_head(model) is model.lm_head


def test_captured_visual_tokens_match_the_image_processors_grid():
    model, processor = build_tiny_smolvlm()
    adapter = get_adapter(model)
    inputs, images = _batch(processor)
    assert set(inputs) <= set(adapter.input_keys)
    crops = [crops_per_image(processor, image) for image in images]
    assert crops == [5, 3]  # the images' grids differ, so the per-sample split is exercised
    with torch.no_grad(), capture_features(model, adapter) as store:
        model(**inputs)
    visual, mask = store.padded_visual()
    assert mask.sum(1).tolist() == [visual_tokens_per_image(processor, image) for image in images] == [80, 48]
    assert store.image_counts == [processor.image_seq_len] * sum(crops)  # one "image" per crop, as the model sees it
    assert store.images_per_sample == crops
    # the captured rows are the image features the language model received, not the <image> placeholder's embedding
    placeholder = model.get_input_embeddings().weight[model.config.image_token_id]
    assert visual.shape == (2, 80, 64)
    assert not torch.isclose(visual[mask], placeholder.expand(int(mask.sum()), -1)).all(-1).any()


def test_template_labels_and_replacement_of_an_unmarked_template(caplog):
    model, processor = build_tiny_smolvlm()
    assert get_chat_template("smolvlm") == SMOLVLM_CHAT_TEMPLATE
    messages = _user() + [{"role": "assistant", "content": [{"type": "text", "text": "sinus rhythm"}]}]
    rendered = processor.apply_chat_template(messages, tokenize=False)
    assert rendered == (
        "<|im_start|>User:<image>What is the rhythm?<end_of_utterance>\nAssistant: sinus rhythm<end_of_utterance>\n"
    )
    # The released SmolVLM template renders the same conversation without {% generation %} markers: replaced.
    released = SMOLVLM_CHAT_TEMPLATE.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    processor.chat_template = released
    with caplog.at_level(logging.WARNING):
        collator = DualViewCollator(processor)
    assert "'smolvlm' template" in caplog.text
    batch = collator([{"messages": messages, "images": [make_ecg_like_image(0, (64, 48))]}])
    labels = batch["labels"][0]
    answer = processor.tokenizer.decode(labels[labels != -100])
    assert answer == " sinus rhythm<end_of_utterance>\n"
    assert batch["pixel_values"].shape == (1, 5, 3, 32, 32) and "pixel_attention_mask" in batch


def test_processor_of_another_size_is_refused_before_training(tmp_path):
    student = build_tiny_smolvlm(seed=0)
    wrong = SmolVLMImageOnlyProcessor(
        image_processor=student[1].image_processor, tokenizer=student[1].tokenizer, image_seq_len=64
    )
    teacher = build_tiny_llava_next(seed=1, flat=True)
    with pytest.raises(ValueError, match="image_seq_len=64 tokens but the student model makes 16"):
        EVLDistillTrainer(
            student[0],
            teacher_model=teacher[0],
            args=_args(tmp_path),
            train_dataset=make_tiny_vlm_dataset(n=2),
            processing_class=wrong,
            teacher_processing_class=teacher[1],
        )


def _args(tmp_path, **overrides):
    values = dict(
        output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=2, bf16=False,
        gradient_checkpointing=False, use_cpu=True, report_to="none", logging_steps=1, save_strategy="no",
        learning_rate=1e-3, seed=0, disable_tqdm=True, kd_method="evl", alpha=0.5,
    )  # fmt: skip
    return EVLDistillConfig(**{**values, **overrides})


def test_pulse_like_teacher_distils_into_smolvlm_with_all_three_terms(tmp_path):
    student = build_tiny_smolvlm(seed=0)
    teacher = build_tiny_llava_next(seed=1, flat=True)  # PULSE's flat packing
    dataset = make_tiny_vlm_dataset(n=4, seed=0, sizes=SIZES)  # 2 steps x 2 samples: one epoch, each sample once
    trainer = EVLDistillTrainer(
        student[0],
        teacher_model=teacher[0],
        args=_args(tmp_path, projector_learning_rate=2e-3),
        train_dataset=dataset,
        processing_class=student[1],
        teacher_processing_class=teacher[1],
    )
    seen: list[list[int]] = []
    trainer.kd_method.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].student_visual_mask.sum(1).tolist())
    )
    aligner_before = {k: v.clone() for k, v in trainer.kd_method.state_dict().items()}
    connector_before = student[0].model.connector.modality_projection.proj.weight.clone()
    trainer.train()

    logs = [entry for entry in trainer.state.log_history if "ce_loss" in entry and "loss" in entry]
    assert len(logs) == 2
    for entry in logs:
        assert all(math.isfinite(entry[k]) and entry[k] > 0 for k in ("ce_loss", "mhca_loss", "rel_loss", "ot_loss"))
    changed = [k for k, v in trainer.kd_method.state_dict().items() if not torch.equal(v, aligner_before[k])]
    assert {k for k in aligner_before if k.endswith("weight")} <= set(changed)
    assert not torch.equal(student[0].model.connector.modality_projection.proj.weight, connector_before)
    # every sample's visual tokens were captured, as many as the family predicts from its image's crop grid
    predicted = [visual_tokens_per_image(student[1], images[0]) for images in dataset["images"]]
    assert Counter(count for step in seen for count in step) == Counter(predicted) == Counter({80: 2, 48: 2})
    # the SmolVLM projector (its connector) got the projector learning rate
    connector = {id(p) for p in student[0].model.connector.parameters()}
    groups = [g for g in trainer.optimizer.param_groups if any(id(p) in connector for p in g["params"])]
    assert groups and all(g["initial_lr"] == 2e-3 for g in groups)
    assert all(id(p) in connector for g in groups for p in g["params"])


@pytest.fixture(scope="module")
def saved_smolvlm(tmp_path_factory):
    root = tmp_path_factory.mktemp("smolvlm")
    model, processor = build_tiny_smolvlm(seed=3)
    model.save_pretrained(root)
    processor.save_pretrained(root)
    for index, size in enumerate((*SIZES, (48, 64))):
        make_ecg_like_image(index, size).save(root / f"{index}.png")
    return root


def test_reload_and_generate_left_padded_batches_match_one_by_one(saved_smolvlm):
    model, processor = load_model(saved_smolvlm), load_processor(saved_smolvlm)
    assert type(processor) is SmolVLMImageOnlyProcessor
    template = resolve_chat_template(model.config.model_type, processor, "auto")
    assert template == SMOLVLM_CHAT_TEMPLATE
    processor.chat_template = None  # without a template of its own, the family's registered one prompts
    assert resolve_chat_template(model.config.model_type, processor, "auto") == SMOLVLM_CHAT_TEMPLATE
    records = [
        EvalRecord(
            id=str(i),
            prompt=f"<image>\nQuestion {i}: is the rhythm regular?",
            reference="yes",
            image=str(saved_smolvlm / f"{i}.png"),
            source="test",
            index=i,
        )  # fmt: skip
        for i in range(3)
    ]
    batched, skipped = BatchGenerator(model, processor, template, max_new_tokens=4, batch_size=3)(
        records, progress=False
    )
    single, _ = BatchGenerator(model, processor, template, max_new_tokens=4, batch_size=1)(records, progress=False)
    assert not skipped
    assert [g.text for g in batched] == [g.text for g in single]
    assert [g.num_tokens for g in batched] == [g.num_tokens for g in single]
    assert all(0 < g.num_tokens <= 4 for g in batched)
    prompt = BatchGenerator(model, processor, template, max_new_tokens=4).render(records[0])
    assert prompt == "<|im_start|>User:<image>Question 0: is the rhythm regular?<end_of_utterance>\nAssistant:"


def test_recipe_is_pulse_to_qwen_with_the_smolvlm_student():
    from pathlib import Path

    import yaml
    from trl import ModelConfig

    from evl_kd_trainer.scripts.args import DataArguments
    from evl_kd_trainer.scripts.recipe import validate_recipe

    recipes = Path(__file__).resolve().parent.parent / "recipes"
    recipe = yaml.safe_load((recipes / "pulse_to_smolvlm.yaml").read_text())
    validate_recipe(recipe, (ModelConfig, DataArguments, EVLDistillConfig), "pulse_to_smolvlm.yaml")
    reference = yaml.safe_load((recipes / "pulse_to_qwen.yaml").read_text())
    differs = {key for key in reference.keys() | recipe.keys() if reference.get(key) != recipe.get(key)}
    # SmolVLM has no min/max pixel budget (its image processor sizes images by longest edge and crop)
    assert differs == {"model_name_or_path", "output_dir", "min_pixels", "max_pixels"}
    assert "min_pixels" not in recipe and "SmolVLM" in recipe["model_name_or_path"]
