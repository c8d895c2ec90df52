"""Feature capture on tiny real models: visual tokens as the LM receives them, hidden states of a chosen
layer, no LM head on the teacher path, hook hygiene, PEFT / DDP wrappers and gradient flow."""

from __future__ import annotations

import pytest
import torch

from evl_kd_trainer.models import capture_features, get_adapter, teacher_features
from evl_kd_trainer.models.capture import CapturedFeatures, assign_images_to_samples
from evl_kd_trainer.testing import (
    build_tiny_llava,
    build_tiny_llava_next,
    build_tiny_qwen2_5_vl,
    build_tiny_qwen2_vl,
    build_tiny_qwen3_vl,
    make_ecg_like_image,
)

BUILDERS = {
    "qwen3_vl": build_tiny_qwen3_vl,
    "qwen2_vl": build_tiny_qwen2_vl,
    "qwen2_5_vl": build_tiny_qwen2_5_vl,
    "llava_next": build_tiny_llava_next,
    "llava": build_tiny_llava,
}
SIZES = ((64, 48), (100, 40), (40, 90))


def _batch(processor, images_per_row, with_answer=True):
    """One row per entry of ``images_per_row`` (a list of image sizes; empty = text-only row)."""
    texts, images, seed = [], [], 0
    for sizes in images_per_row:
        content = [{"type": "image"} for _ in sizes] + [{"type": "text", "text": "What is the rhythm?"}]
        messages = [{"role": "user", "content": content}]
        if with_answer:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": "sinus rhythm"}]})
        texts.append(processor.apply_chat_template(messages, tokenize=False))
        row = []
        for size in sizes:
            row.append(make_ecg_like_image(seed, size))
            seed += 1
        images.append(row)
    return processor(text=texts, images=images, return_tensors="pt", padding=True)


def _model_image_features(model, inputs) -> torch.Tensor:
    """The model's own visual features for the batch (merger / packed projector output), concatenated."""
    base = model.model
    if "image_grid_thw" in inputs:
        out = base.get_image_features(inputs["pixel_values"], inputs["image_grid_thw"]).pooler_output
    elif "image_sizes" in inputs:
        out = base.get_image_features(inputs["pixel_values"], inputs["image_sizes"]).pooler_output
    else:
        out = base.get_image_features(inputs["pixel_values"]).pooler_output
    if isinstance(out, (list, tuple)):
        out = torch.cat([o.reshape(-1, o.shape[-1]) for o in out])
    return out.reshape(-1, out.shape[-1])


def _hook_count(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("name", list(BUILDERS))
@pytest.mark.parametrize("size", SIZES)
def test_visual_tokens_per_image_equal_processor_count_and_model_features(name, size):
    model, processor = BUILDERS[name]()
    adapter = get_adapter(model)
    inputs = _batch(processor, [[size], [(64, 48)]])
    with torch.no_grad(), capture_features(model, adapter) as store:
        model(**inputs)
    per_row = (inputs["input_ids"] == adapter.image_token_id).sum(1).tolist()
    assert [v.shape[0] for v in store.visual] == per_row
    assert all(v.shape[1] == adapter.dims.visual_width for v in store.visual)
    with torch.no_grad():
        expected = _model_image_features(model, inputs)
    assert torch.allclose(torch.cat(store.visual), expected, atol=1e-6)


def test_qwen_two_images_in_one_sample_and_a_text_only_sample():
    model, processor = build_tiny_qwen3_vl()
    adapter = get_adapter(model)
    inputs = _batch(processor, [[(64, 48), (130, 40)], [], [(40, 90)]])
    with torch.no_grad(), capture_features(model, adapter) as store:
        model(**inputs)
    grid_counts = (inputs["image_grid_thw"].prod(-1) // 4).tolist()
    assert [v.shape[0] for v in store.visual] == grid_counts
    assert len(set(grid_counts)) > 1
    assert store.images_per_sample == [2, 0, 1]
    padded, mask = store.padded_visual()
    assert padded.shape == (3, grid_counts[0] + grid_counts[1], 64)
    assert mask.sum(1).tolist() == [grid_counts[0] + grid_counts[1], 0, grid_counts[2]]
    assert torch.equal(padded[0], torch.cat(store.visual[:2]))
    assert torch.equal(padded[2, : grid_counts[2]], store.visual[2])
    assert not padded[1].any() and not padded[2, grid_counts[2] :].any()


@pytest.mark.parametrize("name", list(BUILDERS))
def test_hidden_layers_match_output_hidden_states(name):
    model, processor = BUILDERS[name]()
    adapter = get_adapter(model)
    inputs = _batch(processor, [[(64, 48)], [(100, 40)]])
    with torch.no_grad():
        reference = model.model(**inputs, output_hidden_states=True)
        # transformers reports the *normed* last layer as hidden_states[-1]; earlier entries are layer outputs
        assert torch.equal(reference.hidden_states[-1], reference.last_hidden_state)
        for layer, expected in (
            (-1, reference.last_hidden_state),
            (0, reference.hidden_states[1]),
            (-2, reference.hidden_states[-2]),
        ):
            with capture_features(model, adapter, hidden_layer=layer, visual=False) as store:
                model(**inputs)
            assert store.hidden.shape == (*inputs["input_ids"].shape, adapter.dims.hidden_size)
            assert torch.allclose(store.hidden, expected, atol=1e-5), layer
            assert store.visual is None
        # the last decoder layer's own output is the pre-norm tensor: the final norm maps it to layer -1
        with capture_features(model, adapter, hidden_layer=1, visual=False) as store:
            model(**inputs)
        assert not torch.allclose(store.hidden, reference.last_hidden_state, atol=1e-3)
        normed = adapter.language_model(model).norm(store.hidden)
        assert torch.allclose(normed, reference.last_hidden_state, atol=1e-5)
    with pytest.raises(ValueError, match="out of range"):
        with capture_features(model, adapter, hidden_layer=2):
            pass


@pytest.mark.parametrize("name", ["qwen3_vl", "llava_next"])
def test_teacher_path_never_runs_lm_head_and_matches_full_forward(name):
    teacher, processor = BUILDERS[name]()
    adapter = get_adapter(teacher)
    inputs = _batch(processor, [[(64, 48)], [(100, 40)]])
    calls = []
    handle = adapter.get_lm_head(teacher).register_forward_hook(lambda *args: calls.append(1))
    try:
        with torch.no_grad(), capture_features(teacher, adapter) as full:
            teacher(**inputs)
        assert len(calls) == 1  # the hook does see a normal forward
        extra = {"labels": inputs["input_ids"].clone()}  # dropped by the adapter: the base model has no labels
        store = teacher_features(teacher, adapter, {**inputs, **extra})
        assert len(calls) == 1
    finally:
        handle.remove()
    assert not store.hidden.requires_grad
    assert torch.allclose(store.hidden, full.hidden, atol=1e-6)
    assert all(torch.allclose(a, b) for a, b in zip(store.visual, full.visual))


def test_hooks_are_removed_after_context_and_after_exception():
    model, processor = build_tiny_qwen3_vl()
    adapter = get_adapter(model)
    before = _hook_count(model)
    with capture_features(model, adapter, hidden_layer=0):
        assert _hook_count(model) == before + 3
    assert _hook_count(model) == before
    with pytest.raises(RuntimeError, match="boom"):
        with capture_features(model, adapter):
            raise RuntimeError("boom")
    assert _hook_count(model) == before
    # a failure raised inside the model's forward (here by the capture hook itself) also leaves no hook
    inputs = _batch(processor, [[(64, 48)]])
    embeds = model.get_input_embeddings()(inputs["input_ids"])
    with pytest.raises(RuntimeError, match="needs the model called with input_ids"):
        with capture_features(model, adapter):
            model(
                inputs_embeds=embeds,
                attention_mask=inputs["attention_mask"],
                mm_token_type_ids=inputs["mm_token_type_ids"],
            )
    assert _hook_count(model) == before


def test_capture_through_peft_lora_with_gradients():
    from peft import LoraConfig, get_peft_model

    model, processor = build_tiny_qwen3_vl()
    adapter = get_adapter(model)
    inputs = _batch(processor, [[(64, 48)], [(100, 40)]])
    with torch.no_grad(), capture_features(model, adapter) as plain:
        model(**inputs)
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.train()
    with capture_features(peft_model, get_adapter(peft_model)) as store:
        peft_model(**inputs)
    # LoRA (random init here) changes the LM's hidden states but not the visual tokens it receives
    assert store.hidden.shape == plain.hidden.shape and not torch.allclose(store.hidden, plain.hidden)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(store.visual, plain.visual))
    store.hidden.pow(2).mean().backward()
    lora_grads = [p.grad for n, p in peft_model.named_parameters() if "lora_" in n]
    assert lora_grads and all(g is not None for g in lora_grads)
    assert any(g.abs().sum() > 0 for g in lora_grads)


def test_gradients_flow_into_vision_tower_through_captured_visual_tokens():
    model, processor = build_tiny_qwen3_vl()
    model.train()
    adapter = get_adapter(model)
    inputs = _batch(processor, [[(64, 48)], []])
    with capture_features(model, adapter) as store:
        model(**inputs)
    padded, mask = store.padded_visual()
    (padded[mask].sum()).backward()
    merger_grad = model.model.visual.merger.linear_fc2.weight.grad
    assert merger_grad is not None and merger_grad.abs().sum() > 0


def test_capture_through_ddp(tmp_path):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    model, processor = build_tiny_llava_next()
    adapter = get_adapter(model)
    inputs = _batch(processor, [[(64, 48)]])
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        ddp = DistributedDataParallel(model)
        assert type(get_adapter(ddp)) is type(adapter)
        with capture_features(ddp, get_adapter(ddp), hidden_layer=0) as store:
            ddp(**inputs)
    finally:
        dist.destroy_process_group()
    n_image = int((inputs["input_ids"] == adapter.image_token_id).sum())
    assert [v.shape[0] for v in store.visual] == [n_image]
    assert store.hidden.shape == (1, inputs["input_ids"].shape[1], 96)


def test_assign_images_to_samples():
    assert assign_images_to_samples([4, 8, 6], [12, 0, 6]) == [2, 0, 1]
    assert assign_images_to_samples([], [0, 0]) == [0, 0]
    with pytest.raises(ValueError):
        assign_images_to_samples([4, 8], [5, 7])
    with pytest.raises(ValueError):
        assign_images_to_samples([4, 8], [4, 0])


def test_padded_visual_without_any_image():
    store = CapturedFeatures(
        hidden=torch.zeros(2, 5, 8), visual=[], input_ids=torch.zeros(2, 5, dtype=torch.long), images_per_sample=[0, 0]
    )
    padded, mask = store.padded_visual()
    assert padded.shape == (2, 0, 8) and mask.shape == (2, 0)


def test_flat_llava_next_if_available():
    flat = pytest.importorskip("evl_kd_trainer.models.llava_flat")
    from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

    reference, processor = build_tiny_llava_next()
    config = reference.config
    config.mm_patch_merge_type = "flat"
    torch.manual_seed(0)
    model = flat.LlavaNextFlatForConditionalGeneration(config).eval()
    adapter = get_adapter(model)
    image = make_ecg_like_image(0, (100, 40))
    pixels = processor.image_processor([image], return_tensors="pt")
    crops = image_size_to_num_patches(
        pixels["image_sizes"][0].tolist(), config.image_grid_pinpoints, config.vision_config.image_size
    )
    n_tokens = crops * (config.vision_config.image_size // config.vision_config.patch_size) ** 2
    ids = processor.tokenizer("USER: " + "<image>" * n_tokens + "\nWhat? ASSISTANT:", return_tensors="pt")
    with torch.no_grad(), capture_features(model, adapter) as store:
        model(**ids, pixel_values=pixels["pixel_values"], image_sizes=pixels["image_sizes"])
    assert [v.shape[0] for v in store.visual] == [n_tokens]
