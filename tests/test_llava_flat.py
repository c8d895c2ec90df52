"""Flat LLaVA-NeXT (PULSE's packing): token counts, packed features vs a direct computation, batching,
the "full" strategy, save/reload through our loaders, and the config guard."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn import functional as F

from evl_kd_trainer.models import capture_features, get_adapter, load_model, load_processor
from evl_kd_trainer.models.llava_flat import (
    LlavaNextFlatForConditionalGeneration,
    LlavaNextFlatProcessor,
    flat_num_crops,
)
from evl_kd_trainer.testing import build_tiny_llava_next, make_ecg_like_image

# Tiny LLaVA-NeXT: 32-px crops, 8-px patches -> 16 tokens per crop; grid (h, w) [[32,64],[64,32],[64,64],[96,32],[32,96]].
TOKENS_PER_CROP = 16
# (W, H) -> crops: 64x48 -> 64x64 grid (4) + base; 100x40 -> 32x96 (3) + base; 40x90 -> 96x32 (3) + base;
# 20x20 -> tie between 32x64 and 64x32 (same effective and wasted area): the first listed, 1x2, wins.
CASES = {(64, 48): 5, (100, 40): 4, (40, 90): 4, (20, 20): 3}


def _flat_pair(strategy: str = "default"):
    stock, stock_processor = build_tiny_llava_next(vision_feature_select_strategy=strategy)
    config = stock.config
    config.mm_patch_merge_type = "flat"
    model = LlavaNextFlatForConditionalGeneration(config).eval()
    state = {k: v for k, v in stock.state_dict().items() if "image_newline" not in k}
    model.load_state_dict(state, strict=True)
    processor = LlavaNextFlatProcessor(
        image_processor=stock_processor.image_processor,
        tokenizer=stock_processor.tokenizer,
        patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy=strategy,
        chat_template=stock_processor.chat_template,
        image_token="<image>",
        num_additional_image_tokens=1,
    )
    return model, processor, stock, stock_processor


def _inputs(processor, sizes_per_row, seed=0):
    texts, images = [], []
    for i, sizes in enumerate(sizes_per_row):
        content = [{"type": "image"} for _ in sizes] + [{"type": "text", "text": "What is the rhythm?"}]
        texts.append(processor.apply_chat_template([{"role": "user", "content": content}], tokenize=False))
        images.append([make_ecg_like_image(seed + 10 * i + j, size) for j, size in enumerate(sizes)])
    return processor(text=texts, images=images, return_tensors="pt", padding=True)


def _direct_flat_features(model, pixel_values: torch.Tensor, crops: int, strategy: str) -> torch.Tensor:
    """Flat packing computed by hand from the model's modules: CLIP layer -2 (CLS dropped for "default"),
    the 2-layer GELU projector, crops concatenated base first."""
    hidden = model.model.vision_tower(pixel_values[:crops], output_hidden_states=True).hidden_states[-2]
    if strategy == "default":
        hidden = hidden[:, 1:]
    projector = model.model.multi_modal_projector
    out = projector.linear_2(F.gelu(projector.linear_1(hidden)))
    return torch.cat(list(out), dim=0)


@pytest.mark.parametrize("size,crops", list(CASES.items()))
def test_flat_token_count_and_features_equal_direct_packing(size, crops):
    model, processor, _, stock_processor = _flat_pair()
    inputs = _inputs(processor, [[size]])
    n_tokens = int((inputs["input_ids"] == processor.image_token_id).sum())
    assert n_tokens == crops * TOKENS_PER_CROP
    height, width = inputs["image_sizes"][0].tolist()
    assert (height, width) == (size[1], size[0])
    assert flat_num_crops((height, width), model.config.image_grid_pinpoints, (32, 32)) == crops
    assert processor.flat_num_image_tokens(height, width) == n_tokens
    assert processor._get_num_multimodal_tokens(image_sizes=[[height, width]]).num_image_tokens == [n_tokens]
    # the stock processor's unpad + newline count differs: the flat class is not a no-op
    stock_inputs = _inputs(stock_processor, [[size]])
    assert int((stock_inputs["input_ids"] == processor.image_token_id).sum()) != n_tokens

    adapter = get_adapter(model)
    with torch.no_grad(), capture_features(model, adapter) as store:
        model(**inputs)
        expected = _direct_flat_features(model, inputs["pixel_values"][0], crops, "default")
    assert [v.shape[0] for v in store.visual] == [n_tokens]
    torch.testing.assert_close(store.visual[0], expected, atol=1e-6, rtol=1e-5)


def test_flat_batch_rows_equal_single_rows():
    """Images with different crop counts in one batch (crops zero-padded, rows left-padded) give each row
    the logits it gets alone; a row with two images gets both runs."""
    model, processor, _, _ = _flat_pair()
    rows = [[(64, 48)], [(100, 40), (20, 20)]]
    batch = _inputs(processor, rows)
    runs = []
    with torch.no_grad():
        out = model(**batch).logits
        for i, sizes in enumerate(rows):
            single = _inputs(processor, [sizes], seed=10 * i)
            length = single["input_ids"].shape[1]
            alone = model(**single).logits[0]
            torch.testing.assert_close(out[i, -length:], alone, atol=1e-5, rtol=1e-4)
            runs.append(int((single["input_ids"] == processor.image_token_id).sum()))
    assert runs == [5 * TOKENS_PER_CROP, (4 + 3) * TOKENS_PER_CROP]


def test_full_strategy_keeps_cls_of_every_crop():
    model, processor, _, _ = _flat_pair(strategy="full")
    inputs = _inputs(processor, [[(100, 40)]])
    n_tokens = int((inputs["input_ids"] == processor.image_token_id).sum())
    assert n_tokens == 4 * (TOKENS_PER_CROP + 1)
    with torch.no_grad(), capture_features(model, get_adapter(model)) as store:
        model(**inputs)
        expected = _direct_flat_features(model, inputs["pixel_values"][0], 4, "full")
    torch.testing.assert_close(store.visual[0], expected, atol=1e-6, rtol=1e-5)


def test_save_and_reload_through_our_loaders(tmp_path):
    model, processor, _, _ = _flat_pair()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["mm_patch_merge_type"] == "flat" and config["model_type"] == "llava_next"
    reloaded = load_model(tmp_path)
    assert type(reloaded) is LlavaNextFlatForConditionalGeneration
    assert not any("image_newline" in k for k in reloaded.state_dict())
    reloaded_processor = load_processor(tmp_path)
    assert type(reloaded_processor) is LlavaNextFlatProcessor
    assert reloaded_processor.chat_template == processor.chat_template
    inputs = _inputs(processor, [[(100, 40)]])
    again = _inputs(reloaded_processor, [[(100, 40)]])
    assert torch.equal(inputs["input_ids"], again["input_ids"])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**again).logits, model(**inputs).logits)


def test_flat_class_refuses_other_merge_types_and_records_flat():
    stock, _ = build_tiny_llava_next()
    config = stock.config
    config.mm_patch_merge_type = "spatial_unpad"
    with pytest.raises(ValueError, match="mm_patch_merge_type == 'flat'"):
        LlavaNextFlatForConditionalGeneration(config)
    fresh, _ = build_tiny_llava_next()
    assert getattr(fresh.config, "mm_patch_merge_type", None) is None
    model = LlavaNextFlatForConditionalGeneration(fresh.config)
    assert model.config.mm_patch_merge_type == "flat"  # so that a saved copy reloads as flat
    assert model.model.image_newline is None and isinstance(fresh.model.image_newline, torch.nn.Parameter)


def test_flat_num_crops_follows_pinpoint_order_on_ties():
    # A square image smaller than one crop fits 1x2 and 2x1 equally well: the first listed wins.
    assert flat_num_crops((10, 10), [[32, 64], [64, 32]], (32, 32)) == 3
    assert flat_num_crops((10, 10), [[64, 64], [32, 64]], (32, 32)) == 3  # less waste beats order
    assert flat_num_crops((300, 100), [[32, 96], [96, 32], [64, 64]], (32, 32)) == 4
    assert flat_num_crops((100, 100), [[40, 80]], (32, 32)) == 1 + 2 * 3  # ceil division, as the model counts
