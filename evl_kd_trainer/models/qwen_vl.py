"""Adapters of the Qwen-VL family (students Qwen3-VL, Qwen2.5-VL, Qwen2-VL; also same-family teachers).

The vision merger emits ``prod(image_grid_thw) // spatial_merge_size**2`` tokens per image, written in
order into the ``<|image_pad|>`` positions of ``inputs_embeds``. Qwen3-VL additionally adds deepstack
features inside decoder layers 0..k; those are not part of the visual tokens read here (the LM input).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from evl_kd_trainer.models.base import ModelAdapter, register_adapter


@register_adapter("qwen3_vl", "qwen2_5_vl", "qwen2_vl")
class QwenVLAdapter(ModelAdapter):
    """Qwen2-VL / Qwen2.5-VL / Qwen3-VL: per-image token counts come from ``image_grid_thw``."""

    model_type = "qwen_vl"
    input_keys = ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids")

    @property
    def merge_size(self) -> int:
        return int(self.config.vision_config.spatial_merge_size)

    def image_token_counts(self, inputs: Mapping[str, Any]) -> list[int]:
        grid = inputs.get("image_grid_thw")
        if grid is None:
            return []
        return (grid.prod(-1) // self.merge_size**2).tolist()

    def num_images(self, inputs: Mapping[str, Any]) -> int:
        grid = inputs.get("image_grid_thw")
        return 0 if grid is None else int(grid.shape[0])
