"""The tiny offline model builders: they run, round-trip through save/load, and their processors
insert exactly as many image tokens as the models produce visual features."""

from __future__ import annotations

import pytest
import torch

from evl_kd_trainer.testing import (
    build_tiny_llava,
    build_tiny_llava_next,
    build_tiny_qwen2_5_vl,
    build_tiny_qwen2_vl,
    build_tiny_qwen3_vl,
    make_ecg_like_image,
    make_tiny_vlm_dataset,
)
from evl_kd_trainer.testing.qwen import Qwen3VLImageOnlyProcessor

BUILDERS = {
    "qwen3_vl": build_tiny_qwen3_vl,
    "qwen2_vl": build_tiny_qwen2_vl,
    "qwen2_5_vl": build_tiny_qwen2_5_vl,
    "llava_next": build_tiny_llava_next,
    "llava": build_tiny_llava,
}
SIZES = [(64, 48), (100, 30), (40, 90)]


def _sample(processor, size=(64, 48), seed=0):
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is the rhythm?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "sinus rhythm"}]},
    ]
    text = processor.apply_chat_template(messages, tokenize=False)
    return processor(text=[text], images=[[make_ecg_like_image(seed, size)]], return_tensors="pt")


def _image_token_id(model) -> int:
    config = model.config
    return config.image_token_id if hasattr(config, "image_token_id") else config.image_token_index


def _model_visual_token_count(model, inputs) -> int:
    """Rows of visual features the model itself computes for the batch's images."""
    base = model.model
    if "image_grid_thw" in inputs:
        out = base.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"])
        return sum(chunk.shape[0] for chunk in out.pooler_output)
    if "image_sizes" in inputs:
        out = base.get_image_features(inputs["pixel_values"], inputs["image_sizes"])
    else:
        out = base.get_image_features(inputs["pixel_values"])
    features = out.pooler_output
    if isinstance(features, (list, tuple)):
        return sum(f.reshape(-1, f.shape[-1]).shape[0] for f in features)
    return features.reshape(-1, features.shape[-1]).shape[0]


@pytest.mark.parametrize("name", list(BUILDERS))
def test_builder_forward_gives_finite_logits(name):
    model, processor = BUILDERS[name]()
    inputs = _sample(processor)
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], model.config.text_config.vocab_size)
    assert torch.isfinite(logits).all()
    # the vocab covers the tokenizer (special tokens included)
    assert model.config.text_config.vocab_size == len(processor.tokenizer)


@pytest.mark.parametrize("name", list(BUILDERS))
@pytest.mark.parametrize("size", SIZES)
def test_processor_image_tokens_match_model_features(name, size):
    model, processor = BUILDERS[name]()
    inputs = _sample(processor, size)
    n_tokens = int((inputs["input_ids"] == _image_token_id(model)).sum())
    with torch.no_grad():
        assert _model_visual_token_count(model, inputs) == n_tokens
    assert n_tokens > 0


def test_qwen3_vl_image_token_counts_vary_with_size_and_follow_grid():
    model, processor = build_tiny_qwen3_vl()
    counts = []
    for size in SIZES:
        inputs = _sample(processor, size)
        n_tokens = int((inputs["input_ids"] == model.config.image_token_id).sum())
        assert n_tokens == int(inputs["image_grid_thw"].prod()) // 4
        assert "mm_token_type_ids" in inputs
        assert torch.equal(inputs["mm_token_type_ids"].bool(), inputs["input_ids"] == model.config.image_token_id)
        counts.append(n_tokens)
    assert len(set(counts)) > 1
    assert all(4 <= c <= 16 for c in counts)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_builders_are_deterministic_in_seed(name):
    a, _ = BUILDERS[name](seed=0)
    b, _ = BUILDERS[name](seed=0)
    c, _ = BUILDERS[name](seed=1)
    pa, pb, pc = (next(m.get_output_embeddings().parameters()) for m in (a, b, c))
    assert torch.equal(pa, pb)
    assert not torch.equal(pa, pc)


@pytest.mark.parametrize("name", list(BUILDERS))
def test_save_load_round_trip(name, tmp_path):
    from evl_kd_trainer.models.loading import load_model, load_processor

    model, processor = BUILDERS[name]()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    model2 = load_model(tmp_path).eval()
    processor2 = load_processor(tmp_path)
    assert type(model2) is type(model)
    assert type(processor2) is type(processor)
    inputs, inputs2 = _sample(processor), _sample(processor2)
    assert inputs.keys() == inputs2.keys()
    for key in inputs:
        assert torch.equal(inputs[key], inputs2[key]), key
    with torch.no_grad():
        assert torch.allclose(model(**inputs).logits, model2(**inputs2).logits, atol=1e-6)


def test_qwen3_processor_reloads_by_class(tmp_path):
    _, processor = build_tiny_qwen3_vl()
    processor.save_pretrained(tmp_path)
    reloaded = Qwen3VLImageOnlyProcessor.from_pretrained(tmp_path)
    assert reloaded.chat_template == processor.chat_template
    assert type(reloaded.image_processor) is type(processor.image_processor)
    assert reloaded.image_processor.size == processor.image_processor.size


def test_overrides_reach_the_config():
    model, _ = build_tiny_qwen3_vl(
        text_config={
            "hidden_size": 32,
            "head_dim": 8,
            "num_attention_heads": 4,
            "rope_parameters": {"rope_type": "default", "mrope_section": [1, 1, 2]},
        }
    )
    assert model.config.text_config.hidden_size == 32
    assert model.config.vision_config.out_hidden_size == 32
    teacher, _ = build_tiny_llava_next(text_config={"num_hidden_layers": 3})
    assert len(teacher.model.language_model.layers) == 3


@pytest.mark.parametrize("name", list(BUILDERS))
def test_builders_give_one_dtype_whatever_the_sub_configs_carry(name):
    """Qwen3-VL-2B's released config has text_config.dtype="bfloat16": a constructor alone would build a bf16
    language model beside an fp32 vision tower."""
    carrying = {"text_config": {"dtype": "bfloat16"}, "vision_config": {"dtype": "float16"}}
    model, _ = BUILDERS[name](**carrying)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert model.config.dtype == model.config.text_config.dtype == model.config.vision_config.dtype == torch.float32
    model, _ = BUILDERS[name](dtype="bfloat16", **carrying)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.config.text_config.dtype == model.config.vision_config.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="floating-point"):
        BUILDERS[name](dtype=torch.int8)


def test_flat_llava_next_builder_packs_like_pulse():
    from evl_kd_trainer.models.llava_flat import LlavaNextFlatForConditionalGeneration, LlavaNextFlatProcessor

    model, processor = build_tiny_llava_next(flat=True)
    assert type(model) is LlavaNextFlatForConditionalGeneration and type(processor) is LlavaNextFlatProcessor
    inputs = _sample(processor, (64, 64))  # a 2x2 grid of 32-px crops plus the base crop
    assert int((inputs["input_ids"] == _image_token_id(model)).sum()) == 5 * 16
    with torch.no_grad():
        assert _model_visual_token_count(model, inputs) == 5 * 16


def test_tiny_dataset_format():
    ds = make_tiny_vlm_dataset(n=5, seed=2)
    assert len(ds) == 5 and set(ds.column_names) == {"messages", "images"}
    row = ds[0]
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
    assert row["messages"][0]["content"][0]["type"] == "image"
    assert row["messages"][1]["content"][0]["text"]
    assert len(row["images"]) == 1 and row["images"][0].mode == "RGB"
    # deterministic images, and red grid + black trace present
    img = make_ecg_like_image(seed=3, size=(80, 40))
    assert img.size == (80, 40)
    assert list(img.getdata()) == list(make_ecg_like_image(seed=3, size=(80, 40)).getdata())
    colors = set(img.getdata())
    assert (0, 0, 0) in colors and (240, 120, 120) in colors
