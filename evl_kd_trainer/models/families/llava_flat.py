"""PULSE-7B's LLaVA-NeXT: original LLaVA's ``flat`` patch merging, within the LLaVA family.

A LLaVA-NeXT config with ``mm_patch_merge_type == "flat"`` (what the converter writes for PULSE) packs each image
as ``(1 + crops) * patches`` tokens, no unpadding, no newline token. transformers' stock classes would unpad and add
newline tokens, i.e. silently feed the teacher a visual sequence it was never trained on, so this family (ranked
above :class:`~evl_kd_trainer.models.families.llava.LlavaFamily` for such configs) loads the model and processor
with :mod:`evl_kd_trainer.models.llava_flat`'s classes and refuses the stock ones. Adapter, templates and projector
are LLaVA-NeXT's.
"""

from __future__ import annotations

from typing import Any

from evl_kd_trainer.models.base import unwrap_model
from evl_kd_trainer.models.families.llava import LlavaFamily, LlavaNextAdapter
from evl_kd_trainer.models.llava_flat import (
    FLAT_MERGE_TYPE,
    LlavaNextFlatForConditionalGeneration,
    LlavaNextFlatProcessor,
)
from evl_kd_trainer.models.registry import register_family


def is_flat_llava_next(config: Any) -> bool:
    """Whether ``config`` is a LLaVA-NeXT config with original LLaVA's flat packing (a converted PULSE-7B)."""
    merge = getattr(config, "mm_patch_merge_type", None)
    return getattr(config, "model_type", None) == "llava_next" and merge == FLAT_MERGE_TYPE


@register_family
class LlavaFlatFamily(LlavaFamily):
    """LLaVA-NeXT configs with ``mm_patch_merge_type == "flat"`` (PULSE-7B) and :class:`LlavaNextFlatProcessor`."""

    name = "llava_flat"
    model_types = ("llava_next",)
    adapters = {"llava_next": LlavaNextAdapter}
    template_model_types = ()
    priority = 1  # refines LlavaFamily for flat configs and flat processors (a LlavaNextProcessor subclass)

    def matches_config(self, config: Any) -> bool:
        return is_flat_llava_next(config)

    def processor_classes(self) -> tuple[type, ...]:
        return (LlavaNextFlatProcessor,)

    def model_class(self, config: Any) -> type:
        return LlavaNextFlatForConditionalGeneration

    def own_processor_classes(self) -> tuple[type, ...]:
        return (LlavaNextFlatProcessor,)

    def check_processor(self, model: Any, processor: Any, role: str) -> None:
        if not isinstance(unwrap_model(model), LlavaNextFlatForConditionalGeneration):
            raise ValueError(
                f"The {role} config has mm_patch_merge_type='flat' (original LLaVA packing, PULSE-7B) but the model "
                f"is a {type(model).__name__}: load it with evl_kd_trainer.models.load_model (or pass its path)."
            )
        if not isinstance(processor, LlavaNextFlatProcessor):
            raise ValueError(
                f"The {role} model packs visual tokens 'flat' but its processor is a {type(processor).__name__}: "
                "load it with evl_kd_trainer.models.load_processor (or pass no processor)."
            )


__all__ = ["LlavaFlatFamily", "is_flat_llava_next"]
