"""The image pixel budget (``min_pixels`` / ``max_pixels``, the paper's 784/50176), where a processor's family has one.

Which processors size images by area, and how the bounds are stored, is the model family's knowledge
(:meth:`~evl_kd_trainer.models.family.ModelFamily.has_pixel_budget`): Qwen-VL's image processors have one, LLaVA's
fixed crops do not.
"""

from __future__ import annotations

from typing import Any

from evl_kd_trainer.models.registry import find_family_for_processor


def has_pixel_budget(processor: Any) -> bool:
    """Whether the processor's image processor sizes images by area (Qwen-VL's ``shortest/longest_edge``)."""
    family = find_family_for_processor(processor)
    return family is not None and family.has_pixel_budget(processor)


def apply_pixel_budget(processor: Any, data_args: Any, only_where_supported: bool = False) -> Any:
    """Set the min/max pixels of ``data_args`` (the paper's 784/50176) on a processor whose image processor has them.

    A processor without a pixel budget (LLaVA's fixed crops) is an error, unless ``only_where_supported``: then it
    is returned unchanged (an evaluation of a Qwen-VL student beside a LLaVA teacher applies the budget to the
    student alone).
    """
    if data_args.min_pixels is None and data_args.max_pixels is None:
        return processor
    if not has_pixel_budget(processor):
        if only_where_supported:
            return processor
        image_processor = getattr(processor, "image_processor", None)
        raise ValueError(
            f"`min_pixels`/`max_pixels` apply to Qwen-VL image processors; {type(image_processor).__name__} has no "
            "pixel budget."
        )
    find_family_for_processor(processor).set_pixel_budget(processor, data_args.min_pixels, data_args.max_pixels)
    return processor
