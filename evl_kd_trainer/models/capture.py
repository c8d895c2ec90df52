"""Capture a VLM's hidden states and visual tokens during its own forward, with hooks.

TRL's SFTTrainer calls the student with a fused LM head that returns neither logits nor hidden
states, so features are taken by forward hooks while the model runs:

* a pre-hook on the multimodal base model (``model.model``) records ``input_ids`` and the image
  tensors (the adapter's ``input_keys``: to locate and split the visual tokens);
* a pre-hook on the language model records ``inputs_embeds`` and keeps the rows at image-token
  positions: the visual tokens exactly as the LM receives them, in image order;
* a hook on the language model (layer ``-1``: its final-norm output ``last_hidden_state``) or on one
  decoder layer (``k >= 0``: that layer's output, i.e. ``hidden_states[k + 1]``) records the hidden states.

Captured tensors are the live autograd tensors, so losses on the student's features backpropagate
into the student. The hooks are always removed when the context exits, also on exceptions. If the
model runs several times inside one context, the last call's features are kept.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from evl_kd_trainer.models.base import ModelAdapter, unwrap_model


@dataclass
class CapturedFeatures:
    """Features recorded during one forward.

    Attributes:
        hidden: ``(B, L, D)`` hidden states of the requested layer (``None`` if not requested).
        visual: per-image ``(n_i, D)`` visual tokens, in batch order (``None`` if not requested).
        input_ids: the ``(B, L)`` token ids the model ran on.
        image_counts: visual tokens per image.
        images_per_sample: how many of the images belong to each row of the batch.
    """

    hidden: torch.Tensor | None = None
    visual: list[torch.Tensor] | None = None
    input_ids: torch.Tensor | None = None
    image_counts: list[int] = field(default_factory=list)
    images_per_sample: list[int] = field(default_factory=list)

    def padded_visual(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Visual tokens per sample: ``(B, V, D)`` (a sample's images concatenated in order, zero-padded)
        and a ``(B, V)`` bool mask; a sample without images has an all-False row."""
        if self.visual is None or self.input_ids is None:
            raise ValueError("Visual tokens were not captured (capture with visual=True).")
        batch = self.input_ids.shape[0]
        width = self.visual[0].shape[-1] if self.visual else self.hidden.shape[-1] if self.hidden is not None else 0
        reference = self.visual[0] if self.visual else self.hidden
        per_sample: list[torch.Tensor] = []
        start = 0
        for n_images in self.images_per_sample:
            chunks = self.visual[start : start + n_images]
            start += n_images
            per_sample.append(torch.cat(chunks, dim=0) if chunks else None)  # type: ignore[arg-type]
        length = max((t.shape[0] for t in per_sample if t is not None), default=0)
        dtype = reference.dtype if reference is not None else torch.float32
        device = self.input_ids.device if reference is None else reference.device
        padded = torch.zeros(batch, length, width, dtype=dtype, device=device)
        mask = torch.zeros(batch, length, dtype=torch.bool, device=device)
        rows = []
        for b, tokens in enumerate(per_sample):
            if tokens is None:
                rows.append(padded[b])
                continue
            n = tokens.shape[0]
            mask[b, :n] = True
            # Built by concatenation (not in-place writes) so gradients reach the captured tensors.
            rows.append(torch.cat([tokens, tokens.new_zeros(length - n, width)], dim=0))
        return (torch.stack(rows) if rows else padded), mask


def assign_images_to_samples(image_counts: list[int], tokens_per_sample: list[int]) -> list[int]:
    """How many consecutive images belong to each sample, given each image's token count and each
    row's number of image tokens (images fill rows in order)."""
    result: list[int] = []
    index = 0
    for row_tokens in tokens_per_sample:
        n_images, remaining = 0, row_tokens
        while remaining > 0:
            if index >= len(image_counts) or image_counts[index] > remaining:
                raise ValueError(
                    f"Image-token counts per row {tokens_per_sample} do not match the images' token counts {image_counts}."
                )
            remaining -= image_counts[index]
            index += 1
            n_images += 1
        result.append(n_images)
    if index != len(image_counts):
        raise ValueError(f"{len(image_counts) - index} images have no image tokens in input_ids.")
    return result


def _resolve_layer(adapter: ModelAdapter, hidden_layer: int) -> int | None:
    """``None`` for the final-norm output; otherwise the index of the decoder layer whose output is read.

    ``-1`` is the final-norm output (``last_hidden_state``); ``k >= 0`` the output of decoder layer ``k``
    (= ``hidden_states[k + 1]`` of ``output_hidden_states=True`` for ``k < n - 1``; for the last layer,
    transformers reports the normed tensor there, while this returns the layer's pre-norm output);
    ``k < -1`` is layer ``n + k``, i.e. ``hidden_states[k]``. For Qwen3-VL, layer outputs exclude the
    deepstack features added after layers 0..2, as ``hidden_states`` does."""
    n = adapter.num_layers
    if hidden_layer == -1:
        return None
    index = hidden_layer if hidden_layer >= 0 else n + hidden_layer
    if not 0 <= index < n:
        raise ValueError(f"hidden_layer {hidden_layer} is out of range for a {n}-layer language model.")
    return index


def _first_tensor(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "last_hidden_state"):
        return output.last_hidden_state
    return output[0]


@contextmanager
def capture_features(
    model: nn.Module, adapter: ModelAdapter, hidden_layer: int = -1, visual: bool = True, hidden: bool = True
) -> Iterator[CapturedFeatures]:
    """Record hidden states of ``hidden_layer`` and (if ``visual``) the visual tokens while ``model`` runs.

    ``model`` may be wrapped (PEFT, DDP, DeepSpeed, accelerate): hooks go on the underlying modules.

    Example::

        with capture_features(student, get_adapter(student)) as feats:
            out = student(**inputs)
        hidden, (visual, visual_mask) = feats.hidden, feats.padded_visual()
    """
    store = CapturedFeatures()
    layer_index = _resolve_layer(adapter, hidden_layer)
    inner = unwrap_model(model)
    base = adapter.base_model(inner)
    language_model = adapter.language_model(inner)
    seen_inputs: dict[str, Any] = {}

    def on_base_call(module: nn.Module, args: tuple, kwargs: dict) -> None:
        seen_inputs.clear()
        # What the family's adapter reads to split the visual tokens per image (image_grid_thw, image_sizes, ...).
        seen_inputs.update({k: kwargs.get(k) for k in ("input_ids", *adapter.input_keys)})
        if seen_inputs["input_ids"] is None and args:
            seen_inputs["input_ids"] = args[0]
        store.input_ids = seen_inputs["input_ids"]

    def on_lm_call(module: nn.Module, args: tuple, kwargs: dict) -> None:
        embeds = kwargs.get("inputs_embeds")
        input_ids = seen_inputs.get("input_ids")
        if embeds is None or input_ids is None:
            raise RuntimeError("Visual capture needs the model called with input_ids (not inputs_embeds).")
        mask = adapter.image_token_mask(input_ids)
        counts = adapter.image_token_counts(seen_inputs) if adapter.num_images(seen_inputs) else []
        tokens = embeds[mask]  # (sum of tokens, D), row-major = image order
        if sum(counts) != tokens.shape[0]:
            raise RuntimeError(f"{tokens.shape[0]} image-token positions but the images account for {sum(counts)}.")
        store.image_counts = counts
        store.images_per_sample = assign_images_to_samples(counts, mask.sum(1).tolist())
        store.visual = list(tokens.split(counts)) if counts else []

    def on_hidden(module: nn.Module, args: tuple, output: Any) -> None:
        store.hidden = _first_tensor(output)

    handles = [base.register_forward_pre_hook(on_base_call, with_kwargs=True)]
    try:
        if visual:
            handles.append(language_model.register_forward_pre_hook(on_lm_call, with_kwargs=True))
        if hidden:
            target = language_model if layer_index is None else adapter.decoder_layers(inner)[layer_index]
            handles.append(target.register_forward_hook(on_hidden))
        yield store
    finally:
        for handle in handles:
            handle.remove()


def teacher_features(
    teacher: nn.Module,
    adapter: ModelAdapter,
    inputs: Mapping[str, Any],
    hidden_layer: int = -1,
    visual: bool = True,
) -> CapturedFeatures:
    """Run the teacher's multimodal base model (no LM head) under ``torch.no_grad`` and return its features.

    ``inputs`` may hold extra keys (labels, the student's view): only ``adapter.input_keys`` are passed.
    """
    base = adapter.base_model(teacher)
    with torch.no_grad(), capture_features(teacher, adapter, hidden_layer=hidden_layer, visual=visual) as store:
        base(**adapter.filter_inputs(inputs), use_cache=False)
    return store
