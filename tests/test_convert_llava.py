"""Conversion of original-LLaVA checkpoints (PULSE-7B's format) on a tiny random checkpoint the tests write
in LLaVA's key layout and config.

The tiny CLIP uses 42-px crops and 14-px patches: 3 x 3 = 9 tokens per crop, PULSE's 336 / 14 = 24 x 24 =
576 at 1/8 scale, with PULSE's anyres grid scaled alike. Expected values come from re-implementations of
original LLaVA's own rules ((width, height) pinpoints, ``process_anyres_image``, flat and spatial_unpad
packing) applied to the raw tensors the test wrote, never from the converted model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch.nn import functional as F
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaTokenizer,
    LlavaNextForConditionalGeneration,
    LlavaNextProcessor,
)

from evl_kd_trainer.cli import main as evl_kd_main
from evl_kd_trainer.convert import ConversionError, convert_llava_checkpoint, map_llava_key
from evl_kd_trainer.data.collator import DualViewCollator
from evl_kd_trainer.data.templates import LLAVA_V1_CHAT_TEMPLATE
from evl_kd_trainer.models import capture_features, get_adapter, load_model, load_processor, teacher_features
from evl_kd_trainer.models.llava_flat import LlavaNextFlatForConditionalGeneration, LlavaNextFlatProcessor
from evl_kd_trainer.testing import build_tiny_llama_tokenizer, build_tiny_qwen3_vl, make_ecg_like_image

CROP, PATCH = 42, 14
SIDE = CROP // PATCH  # 3 -> 9 tokens per crop
PINPOINTS_WH = [[CROP, 2 * CROP], [2 * CROP, CROP], [2 * CROP, 2 * CROP], [3 * CROP, CROP], [CROP, 3 * CROP]]
VISION = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "image_size": CROP,
    "patch_size": PATCH,
    "projection_dim": 16,
}
TEXT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-5,
}
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711])
# (W, H) -> crops incl. the base: 3x1, 1x3, 2x1 and 2x2 grids, and a square image smaller than two crops
# whose 1x2 and 2x1 fits tie (LLaVA takes the first listed: 1 wide, 2 high).
SIZES = {(120, 40): 4, (40, 120): 4, (80, 40): 3, (80, 80): 5, (30, 30): 3}


# --- the tiny original-LLaVA checkpoint ------------------------------------------------------------


def _source_tokenizer() -> LlamaTokenizer:
    """The tiny Llama tokenizer without ``<image>`` and without a pad token, as LLaVA ships Vicuna's."""
    tiny = build_tiny_llama_tokenizer()
    model = json.loads(tiny.backend_tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return LlamaTokenizer(vocab=model["vocab"], merges=merges, add_bos_token=True, add_eos_token=False)


def write_llava_checkpoint(
    folder: Path,
    *,
    merge_type: str | None = "flat",
    vision_weights: bool = True,
    newline: bool | None = None,
    tower: str = "openai/clip-vit-large-patch14-336",
    fmt: str = "safetensors",
    seed: int = 0,
    **config_overrides,
) -> dict[str, torch.Tensor]:
    """Write config.json, two weight shards with an index, and the tokenizer in LLaVA's layout; return the
    raw tensors. ``merge_type=None`` leaves the field out (LLaVA's default applies)."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _source_tokenizer()
    torch.manual_seed(seed)
    language_model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), **TEXT))
    raw = {k: v.clone() for k, v in language_model.state_dict().items()}
    if vision_weights:
        tower_model = CLIPVisionModel(CLIPVisionConfig(**VISION))
        prefix = "model.vision_tower.vision_tower.vision_model."  # LLaVA saved CLIPVisionModel of transformers 4.x
        raw.update({prefix + k: v.clone() for k, v in tower_model.state_dict().items()})
    hidden, mm_hidden = TEXT["hidden_size"], VISION["hidden_size"]
    raw["model.mm_projector.0.weight"] = torch.randn(hidden, mm_hidden) * 0.2
    raw["model.mm_projector.0.bias"] = torch.randn(hidden) * 0.1
    raw["model.mm_projector.2.weight"] = torch.randn(hidden, hidden) * 0.2
    raw["model.mm_projector.2.bias"] = torch.randn(hidden) * 0.1
    if newline if newline is not None else merge_type == "spatial_unpad":
        raw["model.image_newline"] = torch.randn(hidden)
    keys = sorted(raw)
    ext = "safetensors" if fmt == "safetensors" else "bin"
    prefix = "model" if fmt == "safetensors" else "pytorch_model"
    shards = {f"{prefix}-00001-of-00002.{ext}": keys[::2], f"{prefix}-00002-of-00002.{ext}": keys[1::2]}
    for name, shard_keys in shards.items():
        tensors = {k: raw[k].contiguous() for k in shard_keys}
        if fmt == "safetensors":
            save_file(tensors, str(folder / name), metadata={"format": "pt"})
        else:
            torch.save(tensors, folder / name)
    index = {"metadata": {}, "weight_map": {k: name for name, ks in shards.items() for k in ks}}
    (folder / f"{prefix}.{ext}.index.json").write_text(json.dumps(index))
    config = {
        **TEXT,
        "vocab_size": len(tokenizer),
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "tie_word_embeddings": False,
        "architectures": ["LlavaLlamaForCausalLM"],
        "model_type": "llava_llama",
        "torch_dtype": "float32",
        "mm_vision_tower": tower,
        "mm_hidden_size": mm_hidden,
        "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "image_aspect_ratio": "anyres",
        "image_grid_pinpoints": PINPOINTS_WH,
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "use_mm_proj": True,
        "tokenizer_padding_side": "right",
        **({"mm_patch_merge_type": merge_type} if merge_type is not None else {}),
        **config_overrides,
    }
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(folder)
    return raw


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    """A local tiny CLIP folder (other weights than the checkpoint's tower)."""
    folder = tmp_path_factory.mktemp("clip")
    torch.manual_seed(123)
    CLIPVisionModel(CLIPVisionConfig(**VISION)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def flat_case(tmp_path_factory, clip_dir):
    """A flat checkpoint whose config names the local CLIP folder, converted once."""
    root = tmp_path_factory.mktemp("flat")
    raw = write_llava_checkpoint(root / "src", merge_type=None, tower=str(clip_dir))
    result = convert_llava_checkpoint(root / "src", root / "dst")
    model, info = load_model(root / "dst", output_loading_info=True)
    assert not any(info.values()), info  # every tensor loaded as written: no missing/unexpected/mismatched key
    return raw, result, model.eval(), load_processor(root / "dst")


# --- original LLaVA's rules, re-implemented on raw tensors -----------------------------------------


def llava_best_resolution(image_wh, pinpoints_wh):
    """LLaVA's select_best_resolution: (width, height) everywhere, first best wins ties."""
    width, height = image_wh
    best, best_effective, best_waste = None, 0, float("inf")
    for w, h in pinpoints_wh:
        scale = min(w / width, h / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        waste = w * h - effective
        if effective > best_effective or (effective == best_effective and waste < best_waste):
            best, best_effective, best_waste = (w, h), effective, waste
    return best


def llava_anyres_pixels(image: Image.Image) -> torch.Tensor:
    """LLaVA's process_anyres_image with the CLIP preprocessing of each 42-px crop."""
    target_w, target_h = llava_best_resolution(image.size, PINPOINTS_WH)
    width, height = image.size
    if target_w / width < target_h / height:
        new_w, new_h = target_w, min(math.ceil(height * target_w / width), target_h)
    else:
        new_w, new_h = min(math.ceil(width * target_h / height), target_w), target_h
    canvas = Image.new("RGB", (target_w, target_h), (0, 0, 0))
    canvas.paste(image.resize((new_w, new_h), Image.BICUBIC), ((target_w - new_w) // 2, (target_h - new_h) // 2))
    crops = [image.resize((CROP, CROP), Image.BICUBIC)]
    crops += [
        canvas.crop((x, y, x + CROP, y + CROP)) for y in range(0, target_h, CROP) for x in range(0, target_w, CROP)
    ]
    arrays = [((np.asarray(c, dtype=np.float32) / 255 - CLIP_MEAN) / CLIP_STD).transpose(2, 0, 1) for c in crops]
    return torch.tensor(np.stack(arrays), dtype=torch.float32)


def raw_crop_features(raw, pixels: torch.Tensor) -> torch.Tensor:
    """Per-crop visual features ``(crops, 9, hidden)`` from the raw tensors: CLIP layer -2 without CLS,
    then mlp2x_gelu."""
    prefix = "model.vision_tower.vision_tower.vision_model."
    clip = CLIPVisionModel(CLIPVisionConfig(**VISION)).eval()
    clip.load_state_dict({k[len(prefix) :]: v for k, v in raw.items() if k.startswith(prefix)})
    with torch.no_grad():
        hidden = clip(pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        hidden = F.linear(hidden, raw["model.mm_projector.0.weight"], raw["model.mm_projector.0.bias"])
        return F.linear(F.gelu(hidden), raw["model.mm_projector.2.weight"], raw["model.mm_projector.2.bias"])


def llava_flat_pack(features: torch.Tensor) -> torch.Tensor:
    return features.flatten(0, 1)  # base crop, then grid crops in raster order


def llava_spatial_unpad_pack(features: torch.Tensor, image_wh, newline: torch.Tensor) -> torch.Tensor:
    """LLaVA's spatial_unpad packing with its (width, height) conventions and int() unpadding."""
    base, grid = features[0], features[1:]
    best_w, best_h = llava_best_resolution(image_wh, PINPOINTS_WH)
    grid = grid.view(best_h // CROP, best_w // CROP, SIDE, SIDE, -1)
    grid = grid.permute(4, 0, 2, 1, 3).flatten(1, 2).flatten(2, 3)
    width, height = image_wh
    cur_h, cur_w = grid.shape[1:]
    if width / height > cur_w / cur_h:
        pad = (cur_h - int(height * cur_w / width)) // 2
        grid = grid[:, pad : cur_h - pad, :]
    else:
        pad = (cur_w - int(width * cur_h / height)) // 2
        grid = grid[:, :, pad : cur_w - pad]
    grid = torch.cat([grid, newline[:, None, None].expand(*grid.shape[:-1], 1)], dim=-1)
    return torch.cat([base, grid.flatten(1, 2).transpose(0, 1)])


def _inputs(processor, sizes, seed=0):
    content = [{"type": "image"} for _ in sizes] + [{"type": "text", "text": "What is the rhythm?"}]
    text = processor.apply_chat_template([{"role": "user", "content": content}], tokenize=False)
    images = [make_ecg_like_image(seed + i, size) for i, size in enumerate(sizes)]
    return processor(text=[text], images=[images], return_tensors="pt"), images


def _converted_state(folder: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        state.update(load_file(str(file)))
    return state


# --- tests ------------------------------------------------------------------------------------------


def test_flat_conversion_writes_a_transformers_folder(flat_case):
    raw, result, model, processor = flat_case
    assert result.merge_type == "flat" and result.vision_weights == "checkpoint" and result.dropped_keys == ()
    assert (result.source_vocab_size, result.vocab_size, result.image_token_id) == (400, 401, 400)
    config = json.loads((result.dst / "config.json").read_text())
    assert config["model_type"] == "llava_next" and config["mm_patch_merge_type"] == "flat"
    assert config["architectures"] == ["LlavaNextFlatForConditionalGeneration"]
    assert config["image_grid_pinpoints"] == [[h, w] for w, h in PINPOINTS_WH]  # (w, h) -> (h, w)
    assert (config["vision_feature_layer"], config["vision_feature_select_strategy"]) == (-2, "default")
    assert config["image_token_index"] == 400 and config["text_config"]["vocab_size"] == 401
    assert type(model) is LlavaNextFlatForConditionalGeneration and model.model.image_newline is None
    assert type(processor) is LlavaNextFlatProcessor and processor.chat_template == LLAVA_V1_CHAT_TEMPLATE
    tokenizer = processor.tokenizer
    assert tokenizer.convert_tokens_to_ids("<image>") == 400 and tokenizer.pad_token == "<unk>"
    assert processor.image_token_id == model.config.image_token_id == 400

    state = _converted_state(result.dst)
    assert not any("image_newline" in k for k in state)
    for key, tensor in raw.items():
        name = map_llava_key(key)
        if name in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
            assert torch.equal(state[name][:400], tensor)
            torch.testing.assert_close(state[name][400], tensor.mean(0))
        else:
            assert torch.equal(state[name], tensor), key
    assert len(state) == len(raw)


@pytest.mark.parametrize("size,crops", list(SIZES.items()))
def test_flat_token_counts_and_pixels_follow_original_llava(flat_case, size, crops):
    raw, _, model, processor = flat_case
    inputs, images = _inputs(processor, [size])
    best_w, best_h = llava_best_resolution(size, PINPOINTS_WH)
    assert crops == 1 + (best_w // CROP) * (best_h // CROP)
    n_tokens = int((inputs["input_ids"] == processor.image_token_id).sum())
    assert n_tokens == crops * SIDE * SIDE  # (1 + grid crops) x 9, no unpadding, no newline
    reference_pixels = llava_anyres_pixels(images[0])
    assert reference_pixels.shape[0] == crops
    torch.testing.assert_close(inputs["pixel_values"][0], reference_pixels, atol=1e-5, rtol=0)
    with torch.no_grad(), capture_features(model, get_adapter(model)) as store:
        model(**inputs)
    expected = llava_flat_pack(raw_crop_features(raw, reference_pixels))
    torch.testing.assert_close(store.visual[0], expected, atol=1e-5, rtol=1e-4)


def test_flat_logits_equal_a_direct_computation_from_raw_weights(flat_case):
    """Two images in one sample: the converted model's logits equal LLaVA's computation (Llama on text
    embeddings with each image's flat features spliced in) on the raw tensors, over the original vocab."""
    raw, _, model, processor = flat_case
    inputs, images = _inputs(processor, [(80, 40), (30, 30)])
    ids = inputs["input_ids"][0]
    image_positions = ids == 400
    features = torch.cat([llava_flat_pack(raw_crop_features(raw, llava_anyres_pixels(im))) for im in images])
    assert int(image_positions.sum()) == features.shape[0] == (3 + 3) * 9

    reference = LlamaForCausalLM(LlamaConfig(vocab_size=400, **TEXT)).eval()
    reference.load_state_dict({k: v for k, v in raw.items() if map_llava_key(k).startswith(("model.lang", "lm_"))})
    with torch.no_grad():
        embeds = raw["model.embed_tokens.weight"][ids.clamp(max=399)]
        embeds[image_positions] = features
        expected = reference(inputs_embeds=embeds[None], attention_mask=inputs["attention_mask"]).logits[0]
        logits = model(**inputs).logits[0]
    torch.testing.assert_close(logits[:, :400], expected, atol=1e-4, rtol=1e-4)
    # the added <image> row is the mean of lm_head's rows: at most 1 / V probability (Jensen)
    assert bool((logits.softmax(-1)[:, 400] <= 1 / 400).all())


def test_spatial_unpad_converts_to_stock_transformers_matching_llava(tmp_path, clip_dir):
    raw = write_llava_checkpoint(tmp_path / "src", merge_type="spatial_unpad", tower=str(clip_dir))
    result = convert_llava_checkpoint(tmp_path / "src", tmp_path / "dst")
    assert result.merge_type == "spatial_unpad"
    model, processor = load_model(tmp_path / "dst").eval(), load_processor(tmp_path / "dst")
    assert type(model) is LlavaNextForConditionalGeneration and type(processor) is LlavaNextProcessor
    assert torch.equal(model.model.image_newline, raw["model.image_newline"])
    for seed, size in enumerate(SIZES):
        inputs, images = _inputs(processor, [size], seed=seed)
        n_tokens = int((inputs["input_ids"] == 400).sum())
        with torch.no_grad(), capture_features(model, get_adapter(model)) as store:
            model(**inputs)
        features = raw_crop_features(raw, llava_anyres_pixels(images[0]))
        expected = llava_spatial_unpad_pack(features, size, raw["model.image_newline"])
        assert n_tokens == expected.shape[0], size
        torch.testing.assert_close(store.visual[0], expected, atol=1e-5, rtol=1e-4)


def test_vision_tower_from_a_local_clip_folder(tmp_path, clip_dir):
    write_llava_checkpoint(tmp_path / "src", vision_weights=False)
    with pytest.raises(ConversionError, match=r"no vision tower weights .*--vision-tower PATH"):
        convert_llava_checkpoint(tmp_path / "src", tmp_path / "dst")
    assert not (tmp_path / "dst").exists() and not list(tmp_path.glob(".dst*"))
    result = convert_llava_checkpoint(tmp_path / "src", tmp_path / "dst", vision_tower=clip_dir)
    assert result.vision_weights == str(clip_dir)
    clip = CLIPVisionModel.from_pretrained(clip_dir).state_dict()
    state = _converted_state(tmp_path / "dst")
    assert all(torch.equal(state["model.vision_tower." + k], v) for k, v in clip.items())
    model = load_model(tmp_path / "dst")
    inputs, _ = _inputs(load_processor(tmp_path / "dst"), [(80, 40)])
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).logits).all()


def test_checkpoint_tower_weights_win_over_the_local_folder(flat_case, clip_dir):
    raw, result, _, _ = flat_case  # its config names clip_dir, whose weights differ
    state = _converted_state(result.dst)
    key = "encoder.layers.0.mlp.fc1.weight"
    converted = state["model.vision_tower." + key]
    assert torch.equal(converted, raw["model.vision_tower.vision_tower.vision_model." + key])
    assert not torch.equal(converted, CLIPVisionModel.from_pretrained(clip_dir).state_dict()[key])


def test_pytorch_bin_shards_convert_like_safetensors(tmp_path, clip_dir):
    write_llava_checkpoint(tmp_path / "a", fmt="safetensors", tower=str(clip_dir))
    write_llava_checkpoint(tmp_path / "b", fmt="bin", tower=str(clip_dir))
    convert_llava_checkpoint(tmp_path / "a", tmp_path / "a_out")
    convert_llava_checkpoint(tmp_path / "b", tmp_path / "b_out")
    a, b = _converted_state(tmp_path / "a_out"), _converted_state(tmp_path / "b_out")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_unused_tensors_are_dropped(tmp_path, clip_dir):
    """A flat checkpoint may carry an image_newline (never used by flat packing) and old rotary buffers."""
    raw = write_llava_checkpoint(tmp_path / "src", newline=True, tower=str(clip_dir))
    buffer = "model.layers.0.self_attn.rotary_emb.inv_freq"
    save_file({buffer: torch.ones(8)}, str(tmp_path / "src" / "extra.safetensors"))
    index = json.loads((tmp_path / "src" / "model.safetensors.index.json").read_text())
    index["weight_map"][buffer] = "extra.safetensors"
    (tmp_path / "src" / "model.safetensors.index.json").write_text(json.dumps(index))
    result = convert_llava_checkpoint(tmp_path / "src", tmp_path / "dst")
    assert sorted(result.dropped_keys) == sorted(["model.image_newline", buffer])
    assert len(_converted_state(tmp_path / "dst")) == len(raw) - 1
    _, info = load_model(tmp_path / "dst", output_loading_info=True)
    assert not any(info.values()), info


def _drop_shard(folder: Path) -> None:
    (folder / "model-00002-of-00002.safetensors").unlink()


def _grow_tokenizer(folder: Path) -> None:
    tokenizer = _source_tokenizer()
    tokenizer.add_tokens(["<im_patch>"])
    tokenizer.save_pretrained(folder)


def _add_foreign_key(folder: Path) -> None:
    save_file({"model.foo.weight": torch.zeros(2)}, str(folder / "extra.safetensors"))
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.foo.weight"] = "extra.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


@pytest.mark.parametrize(
    "setup,kwargs,match",
    [
        (lambda f: (f / "config.json").unlink(), {}, r"no config\.json"),
        (_drop_shard, {}, r"model-00002-of-00002\.safetensors listed in model\.safetensors\.index\.json are missing"),
        (lambda f: [p.unlink() for p in f.glob("model*")], {}, "no weights found"),
        (_add_foreign_key, {}, r"not in original LLaVA's layout, e\.g\. \['model\.foo\.weight'\]"),
        (lambda f: (f / "tokenizer.json").unlink(), {}, r"could not load the tokenizer: no tokenizer\.json"),
        (_grow_tokenizer, {}, r"the tokenizer has 401 tokens but model\.embed_tokens has 400 rows"),
    ],
    ids=["missing-config", "missing-shard", "no-weights", "foreign-key", "no-tokenizer", "tokenizer-size"],
)
def test_bad_checkpoints_fail_clearly(tmp_path, clip_dir, setup, kwargs, match):
    write_llava_checkpoint(tmp_path / "src", tower=str(clip_dir))
    setup(tmp_path / "src")
    with pytest.raises(ConversionError, match=match):
        convert_llava_checkpoint(tmp_path / "src", tmp_path / "dst", **kwargs)
    assert not (tmp_path / "dst").exists() and not list(tmp_path.glob(".dst*"))


@pytest.mark.parametrize(
    "write_kwargs,match",
    [
        ({"merge_type": "spatial"}, r"mm_patch_merge_type 'spatial' is not supported"),
        ({"merge_type": "unpad_max"}, r"mm_patch_merge_type 'unpad_max' is not supported"),
        ({"image_aspect_ratio": "pad"}, r"image_aspect_ratio 'pad' is not supported"),
        ({"mm_projector_type": "linear"}, r"mm_projector_type 'linear' is not supported"),
        ({"merge_type": "spatial_unpad", "newline": False}, r"image_newline is required for spatial_unpad"),
        ({"vision_weights": False, "tower": "someone/unknown-tower"}, r"no vision tower weights"),
        ({"tower": "someone/unknown-tower"}, r"mm_vision_tower='someone/unknown-tower'.*--vision-tower"),
        ({"mm_hidden_size": 48}, r"mm_hidden_size=48 does not match the vision tower's hidden_size=32"),
    ],
    ids=[
        "merge-spatial",
        "merge-unknown",
        "aspect-pad",
        "projector",
        "no-newline",
        "no-tower",
        "tower-config",
        "mm-hidden",
    ],
)
def test_unsupported_configs_fail_clearly(tmp_path, clip_dir, write_kwargs, match):
    write_kwargs = {"tower": str(clip_dir), **write_kwargs}
    write_llava_checkpoint(tmp_path / "src", **write_kwargs)
    with pytest.raises(ConversionError, match=match):
        convert_llava_checkpoint(tmp_path / "src", tmp_path / "dst")
    assert not (tmp_path / "dst").exists()


def test_destination_rules(tmp_path, clip_dir):
    write_llava_checkpoint(tmp_path / "src", tower=str(clip_dir))
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "keep.txt").write_text("x")
    with pytest.raises(ConversionError, match="exists and is not empty"):
        convert_llava_checkpoint(tmp_path / "src", tmp_path / "dst")
    with pytest.raises(ConversionError, match="must differ from the source"):
        convert_llava_checkpoint(tmp_path / "src", tmp_path / "src", overwrite=True)
    convert_llava_checkpoint(tmp_path / "src", tmp_path / "dst", overwrite=True)
    assert not (tmp_path / "dst" / "keep.txt").exists() and (tmp_path / "dst" / "config.json").is_file()


def test_cli_converts_with_dtype_and_small_shards(tmp_path, clip_dir, capsys):
    write_llava_checkpoint(tmp_path / "src", tower=str(clip_dir))
    argv = ["convert-llava", str(tmp_path / "src"), str(tmp_path / "dst"), "--dtype", "bfloat16"]
    assert evl_kd_main([*argv, "--max-shard-size-gb", "0.0001"]) == 0
    assert "mm_patch_merge_type=flat" in capsys.readouterr().out
    shards = sorted(p.name for p in (tmp_path / "dst").glob("*.safetensors"))
    assert len(shards) > 1 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((tmp_path / "dst" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    state = _converted_state(tmp_path / "dst")
    assert {t.dtype for t in state.values()} == {torch.bfloat16}
    config = json.loads((tmp_path / "dst" / "config.json").read_text())
    assert config["dtype"] == config["text_config"]["dtype"] == config["vision_config"]["dtype"] == "bfloat16"
    model = load_model(tmp_path / "dst")
    assert type(model) is LlavaNextFlatForConditionalGeneration
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}

    assert evl_kd_main(argv) == 1  # the destination is not empty now
    assert "evl-kd convert-llava: error:" in capsys.readouterr().err


def test_collator_renders_the_converted_teacher_view_with_flat_counts(flat_case):
    """The dual-view collator expands each teacher image to the flat count, and the converted teacher's
    features on that view are one flat block per image."""
    raw, _, model, processor = flat_case
    records = [
        {
            "id": f"r{i}",
            "messages": [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is the rhythm?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "sinus rhythm"}]},
            ],
            "images": [make_ecg_like_image(i, size)],
        }
        for i, size in enumerate([(80, 80), (120, 40)])
    ]
    batch = DualViewCollator(build_tiny_qwen3_vl()[1], processor)(records)
    teacher_view = {k[len("teacher_") :]: v for k, v in batch.items() if k.startswith("teacher_")}
    assert (teacher_view["input_ids"] == 400).sum(1).tolist() == [5 * 9, 4 * 9]
    store = teacher_features(model, get_adapter(model), teacher_view)
    assert [v.shape[0] for v in store.visual] == [45, 36]
    for image_tokens, record in zip(store.visual, records):
        expected = llava_flat_pack(raw_crop_features(raw, llava_anyres_pixels(record["images"][0])))
        torch.testing.assert_close(image_tokens, expected, atol=1e-5, rtol=1e-4)
