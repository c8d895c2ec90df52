"""Qwen-VL's pixel budget (min/max pixels, the paper's 784/50176) on a processor that has one."""

from __future__ import annotations

from typing import Any


def has_pixel_budget(processor: Any) -> bool:
    """Whether the processor's image processor sizes images by area (Qwen-VL's ``shortest/longest_edge``)."""
    size = getattr(getattr(processor, "image_processor", None), "size", None) or {}
    return "shortest_edge" in size and "longest_edge" in size


def apply_pixel_budget(processor: Any, data_args: Any, only_where_supported: bool = False) -> Any:
    """Set Qwen-VL's min/max pixels (the paper's 784/50176) on a processor whose image processor has them.

    A processor without a pixel budget (LLaVA's fixed crops) is an error, unless ``only_where_supported``: then it
    is returned unchanged (an evaluation of a Qwen-VL student beside a LLaVA teacher applies the budget to the
    student alone).
    """
    if data_args.min_pixels is None and data_args.max_pixels is None:
        return processor
    image_processor = getattr(processor, "image_processor", None)
    size = dict(getattr(image_processor, "size", None) or {})
    if not has_pixel_budget(processor):
        if only_where_supported:
            return processor
        raise ValueError(
            f"`min_pixels`/`max_pixels` apply to Qwen-VL image processors; {type(image_processor).__name__} has no "
            "pixel budget."
        )
    if data_args.min_pixels is not None:
        size["shortest_edge"] = data_args.min_pixels
    if data_args.max_pixels is not None:
        size["longest_edge"] = data_args.max_pixels
    image_processor.size = size
    return processor
