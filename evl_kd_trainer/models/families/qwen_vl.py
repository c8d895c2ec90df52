"""The Qwen-VL family: Qwen3-VL, Qwen2.5-VL and Qwen2-VL (the paper's students; also same-family teachers).

The vision merger emits ``prod(image_grid_thw) // spatial_merge_size**2`` tokens per image, written in order into
the ``<|image_pad|>`` positions of ``inputs_embeds``. Qwen3-VL additionally adds deepstack features inside decoder
layers 0..k; those are not part of the visual tokens read here (the LM input).

The stock processors require a video processor, and Qwen-VL's need torchvision (not importable beside the CPU torch
wheel): the image-only processors below drop it. Their image processors size images by area (``min_pixels`` /
``max_pixels``, the paper's 784 / 50176).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from transformers import Qwen2_5_VLProcessor, Qwen2VLProcessor, Qwen3VLProcessor

from evl_kd_trainer.models.base import ModelAdapter
from evl_kd_trainer.models.family import ModelFamily
from evl_kd_trainer.models.registry import register_family

# Qwen2-VL / Qwen2.5-VL / Qwen3-VL ChatML with vision markers, as the released Qwen3-VL template renders
# an image-text turn: "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{q}<|im_end|>\n".
# `{% generation %}` marks assistant tokens so TRL's `assistant_only_loss=True` also works.
QWEN_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}<|im_start|>assistant\n{% generation %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endgeneration %}"
    "{% else %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen2-VL / Qwen2.5-VL: the same ChatML, plus the default system turn their released templates add when a
# conversation has none ("You are a helpful assistant."); Qwen3-VL's template adds no system turn.
QWEN2_VL_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    + QWEN_VL_CHAT_TEMPLATE
)


class Qwen3VLImageOnlyProcessor(Qwen3VLProcessor):
    """``Qwen3VLProcessor`` without a video processor.

    The stock class requires Qwen3-VL's video processor, which needs torchvision (not importable next
    to the CPU torch wheel). Dropping ``video_processor`` from ``__init__`` removes it from the
    processor's attributes, so images and text work and ``save_pretrained`` writes no video config.
    ``AutoProcessor`` does not know this class: reload it with ``Qwen3VLImageOnlyProcessor.from_pretrained``
    or :func:`evl_kd_trainer.models.loading.load_processor`. Like the stock class it returns
    ``mm_token_type_ids``, which Qwen3-VL's rope index needs.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs: Any) -> None:
        # ProcessorMixin pairs positional args with `get_attributes()` (image_processor, tokenizer) by zip,
        # so the parent's `video_processor` positional (None here) is dropped.
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class Qwen2VLImageOnlyProcessor(Qwen2VLProcessor):
    """``Qwen2VLProcessor`` without a video processor (Qwen2-VL's also needs torchvision); see
    :class:`Qwen3VLImageOnlyProcessor`."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs: Any) -> None:
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class Qwen2_5_VLImageOnlyProcessor(Qwen2_5_VLProcessor):  # noqa: N801  (transformers' own spelling)
    """``Qwen2_5_VLProcessor`` without a video processor; see :class:`Qwen3VLImageOnlyProcessor`."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs: Any) -> None:
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class QwenVLAdapter(ModelAdapter):
    """Qwen2-VL / Qwen2.5-VL / Qwen3-VL: per-image token counts come from ``image_grid_thw``."""

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


@register_family
class QwenVLFamily(ModelFamily):
    """Qwen3-VL (ChatML, template ``qwen_vl``), Qwen2.5-VL and Qwen2-VL (ChatML with a default system turn,
    ``qwen2_vl``)."""

    name = "qwen_vl"
    model_types = ("qwen3_vl", "qwen2_5_vl", "qwen2_vl")
    adapters = dict.fromkeys(model_types, QwenVLAdapter)
    chat_templates = {"qwen_vl": QWEN_VL_CHAT_TEMPLATE, "qwen2_vl": QWEN2_VL_CHAT_TEMPLATE}
    # The released Qwen-VL templates render the same text but carry no generation markers.
    replaces_unmarked_template = True
    conversation_name = "Qwen-VL"
    # The patch merger, and Qwen3-VL's deepstack mergers.
    projector_patterns = ("visual.merger", "visual.deepstack_merger")

    def processor_classes(self) -> tuple[type, ...]:
        return (Qwen3VLProcessor, Qwen2_5_VLProcessor, Qwen2VLProcessor)

    def own_processor_classes(self) -> tuple[type, ...]:
        return (Qwen3VLImageOnlyProcessor, Qwen2_5_VLImageOnlyProcessor, Qwen2VLImageOnlyProcessor)

    def training_template_name(self, processor: Any) -> str | None:
        return "qwen_vl" if isinstance(processor, Qwen3VLProcessor) else "qwen2_vl"

    def eval_template(self, processor: Any) -> str | None:
        # Prompts use the processor's own template; without one, the Qwen3-VL ChatML (no system turn).
        return getattr(processor, "chat_template", None) or QWEN_VL_CHAT_TEMPLATE

    def has_pixel_budget(self, processor: Any) -> bool:
        size = getattr(getattr(processor, "image_processor", None), "size", None) or {}
        return "shortest_edge" in size and "longest_edge" in size

    def set_pixel_budget(self, processor: Any, min_pixels: int | None, max_pixels: int | None) -> None:
        # Qwen-VL's image processors keep the area bounds as size["shortest_edge"] / size["longest_edge"].
        image_processor = processor.image_processor
        size = dict(image_processor.size)
        if min_pixels is not None:
            size["shortest_edge"] = min_pixels
        if max_pixels is not None:
            size["longest_edge"] = max_pixels
        image_processor.size = size


__all__ = [
    "QWEN2_VL_CHAT_TEMPLATE",
    "QWEN_VL_CHAT_TEMPLATE",
    "Qwen2VLImageOnlyProcessor",
    "Qwen2_5_VLImageOnlyProcessor",
    "Qwen3VLImageOnlyProcessor",
    "QwenVLAdapter",
    "QwenVLFamily",
]
