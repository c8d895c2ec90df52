"""Model adapters on tiny real models: lookup, widths, input keys, image-token bookkeeping, LM head."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig

from evl_kd_trainer.models import get_adapter, supported_model_types, unwrap_model
from evl_kd_trainer.models.llava import LlavaAdapter, LlavaNextAdapter, image_token_runs
from evl_kd_trainer.models.qwen_vl import QwenVLAdapter
from evl_kd_trainer.testing import (
    build_tiny_llava,
    build_tiny_llava_next,
    build_tiny_qwen2_5_vl,
    build_tiny_qwen2_vl,
    build_tiny_qwen3_vl,
    make_ecg_like_image,
)

CASES = {
    "qwen3_vl": (build_tiny_qwen3_vl, QwenVLAdapter, 64, 519),
    "qwen2_vl": (build_tiny_qwen2_vl, QwenVLAdapter, 64, 519),
    "qwen2_5_vl": (build_tiny_qwen2_5_vl, QwenVLAdapter, 64, 519),
    "llava_next": (build_tiny_llava_next, LlavaNextAdapter, 96, 401),
    "llava": (build_tiny_llava, LlavaAdapter, 96, 401),
}


def _batch(processor, sizes=((64, 48), (100, 40))):
    texts, images = [], []
    for i, size in enumerate(sizes):
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is the rhythm?"}]}]
        texts.append(processor.apply_chat_template(messages, tokenize=False))
        images.append([make_ecg_like_image(i, size)])
    return processor(text=texts, images=images, return_tensors="pt", padding=True)


@pytest.mark.parametrize("name", list(CASES))
def test_adapter_lookup_and_dims(name):
    build, cls, hidden, vocab = CASES[name]
    model, _ = build()
    adapter = get_adapter(model)
    assert type(adapter) is cls
    assert type(get_adapter(model.config)) is cls
    assert adapter.dims.hidden_size == hidden == model.config.text_config.hidden_size
    assert adapter.dims.visual_width == hidden
    assert adapter.dims.vocab_size == vocab == model.get_output_embeddings().weight.shape[0]
    assert adapter.num_layers == len(adapter.decoder_layers(model)) == 2
    assert adapter.get_lm_head(model) is model.lm_head


@pytest.mark.parametrize("name", list(CASES))
def test_input_keys_cover_processor_output_and_drop_labels(name):
    build, *_ = CASES[name]
    model, processor = build()
    adapter = get_adapter(model)
    inputs = dict(_batch(processor))
    assert set(inputs) <= set(adapter.input_keys)
    filtered = adapter.filter_inputs({**inputs, "labels": inputs["input_ids"].clone(), "other_view_ids": None})
    assert set(filtered) == set(inputs)
    with torch.no_grad():
        assert torch.isfinite(model(**filtered).logits).all()


@pytest.mark.parametrize("name", list(CASES))
def test_image_token_counts_match_input_ids(name):
    build, *_ = CASES[name]
    model, processor = build()
    adapter = get_adapter(model)
    inputs = _batch(processor, sizes=((64, 48), (100, 40), (40, 90)))
    mask = adapter.image_token_mask(inputs["input_ids"])
    counts = adapter.image_token_counts(inputs)
    assert adapter.num_images(inputs) == 3
    # one image per row here, so each row's image-token count is that image's count
    assert counts == mask.sum(1).tolist()


def test_qwen_counts_follow_grid_thw():
    model, processor = build_tiny_qwen3_vl()
    adapter = get_adapter(model)
    inputs = _batch(processor, sizes=((64, 48), (130, 40)))
    assert adapter.image_token_counts(inputs) == (inputs["image_grid_thw"].prod(-1) // 4).tolist()
    assert adapter.image_token_counts({"input_ids": inputs["input_ids"]}) == []


def test_llava_runs_split_images_and_reject_adjacent_images():
    mask = torch.tensor([[0, 1, 1, 0, 1, 1, 1, 0], [1, 1, 0, 0, 0, 0, 0, 1]], dtype=torch.bool)
    assert image_token_runs(mask) == [2, 3, 2, 1]
    model, _ = build_tiny_llava()
    adapter = get_adapter(model)
    image = adapter.image_token_id
    ids = torch.tensor([[5, image, image, image, image, 6]])
    # two images whose tokens touch cannot be told apart: refuse instead of merging them
    with pytest.raises(ValueError, match="runs of image tokens"):
        adapter.image_token_counts({"input_ids": ids, "pixel_values": torch.zeros(2, 3, 32, 32)})


def test_unsupported_model_type_lists_supported_ones():
    with pytest.raises(ValueError) as info:
        get_adapter(LlamaConfig(vocab_size=10, hidden_size=8, num_hidden_layers=1, num_attention_heads=2))
    message = str(info.value)
    assert "'llama'" in message
    for model_type in ("qwen3_vl", "qwen2_5_vl", "qwen2_vl", "llava_next", "llava", "smolvlm"):
        assert model_type in message
    assert set(supported_model_types()) == {"qwen3_vl", "qwen2_5_vl", "qwen2_vl", "llava_next", "llava", "smolvlm"}


def test_unwrap_through_peft_and_module_wrappers():
    from peft import LoraConfig, get_peft_model

    model, _ = build_tiny_qwen3_vl()
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))

    class EngineLike(torch.nn.Module):  # DDP and DeepSpeed engines expose the wrapped model as `.module`
        def __init__(self, module: torch.nn.Module) -> None:
            super().__init__()
            self.module = module

    assert unwrap_model(peft_model) is model
    assert unwrap_model(EngineLike(peft_model)) is model
    adapter = get_adapter(EngineLike(peft_model))
    assert type(adapter) is QwenVLAdapter
    assert adapter.get_lm_head(peft_model) is model.lm_head


def test_load_model_picks_flat_class_for_flat_llava_next(tmp_path):
    flat = pytest.importorskip("evl_kd_trainer.models.llava_flat")
    from evl_kd_trainer.models import load_model

    model, _ = build_tiny_llava_next()
    model.config.mm_patch_merge_type = "flat"
    model.save_pretrained(tmp_path)
    loaded = load_model(tmp_path)
    assert type(loaded) is flat.LlavaNextFlatForConditionalGeneration
    assert type(get_adapter(loaded)) is LlavaNextAdapter
