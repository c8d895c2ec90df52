"""Adapters of LLaVA-1.5 and LLaVA-NeXT (teacher PULSE-7B), including PULSE's flat-packed variant.

LLaVA-NeXT's per-image token count depends on its packing (unpad + newline tokens in transformers;
``(1 + crops) * patches`` in :class:`~evl_kd_trainer.models.llava_flat.LlavaNextFlatForConditionalGeneration`).
Instead of re-deriving either formula, the split is read from ``input_ids``: the processor expands
each ``<image>`` into one contiguous run of image tokens, and the llava_v1 template separates images
(``"<image>\\n"``), so the runs are the images. The number of runs is checked against the number of
images, which makes adjacent images without a separator fail loudly rather than merge.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from evl_kd_trainer.models.base import ModelAdapter, register_adapter


def image_token_runs(mask: torch.Tensor) -> list[int]:
    """Lengths of the contiguous runs of True in a ``(B, L)`` mask, row by row (runs never span rows)."""
    runs: list[int] = []
    for row in mask.bool():
        padded = torch.cat([row.new_zeros(1), row, row.new_zeros(1)]).to(torch.int8)
        edges = padded.diff()
        starts = (edges == 1).nonzero().flatten()
        ends = (edges == -1).nonzero().flatten()
        runs.extend((ends - starts).tolist())
    return runs


class _LlavaFamilyAdapter(ModelAdapter):
    def image_token_counts(self, inputs: Mapping[str, Any]) -> list[int]:
        input_ids = inputs.get("input_ids")
        if input_ids is None:
            raise ValueError("LLaVA visual tokens are located through input_ids; the batch has none.")
        runs = image_token_runs(self.image_token_mask(input_ids))
        expected = self.num_images(inputs)
        if len(runs) != expected:
            raise ValueError(
                f"Found {len(runs)} runs of image tokens for {expected} images: images must be separated by "
                "at least one text token (the llava_v1 template writes '<image>\\n')."
            )
        return runs


@register_adapter("llava_next")
class LlavaNextAdapter(_LlavaFamilyAdapter):
    """LLaVA-NeXT (stock ``spatial_unpad`` packing or PULSE's ``flat`` packing)."""

    model_type = "llava_next"
    input_keys = ("input_ids", "attention_mask", "pixel_values", "image_sizes")

    def num_images(self, inputs: Mapping[str, Any]) -> int:
        sizes = inputs.get("image_sizes")
        if sizes is not None:
            return int(sizes.shape[0])
        pixels = inputs.get("pixel_values")
        return 0 if pixels is None else int(pixels.shape[0])


@register_adapter("llava")
class LlavaAdapter(_LlavaFamilyAdapter):
    """LLaVA-1.5: one crop per image, ``image_seq_length`` tokens each."""

    model_type = "llava"
    input_keys = ("input_ids", "attention_mask", "pixel_values")

    def num_images(self, inputs: Mapping[str, Any]) -> int:
        pixels = inputs.get("pixel_values")
        return 0 if pixels is None else int(pixels.shape[0])
