"""Chat templates of the supported models, as Jinja strings for ``processor.chat_template``.

Each model sees a sample in its own conversation format (the dual-view pipeline renders every sample
twice). The templates accept TRL's ``messages`` format where ``content`` is either a string or a list
of ``{"type": "image"}`` / ``{"type": "text", "text": ...}`` parts.

The templates belong to the model families (:mod:`evl_kd_trainer.models.families`: ``llava_v1`` in ``llava``,
``qwen_vl`` / ``qwen2_vl`` in ``qwen_vl``, ...); this module is their name-based access point, and keeps the
template constants importable from here.
"""

from __future__ import annotations

from typing import Any

from evl_kd_trainer.models.families.llava import LLAVA_V1_CHAT_TEMPLATE, LLAVA_V1_SYSTEM
from evl_kd_trainer.models.families.qwen_vl import QWEN2_VL_CHAT_TEMPLATE, QWEN_VL_CHAT_TEMPLATE
from evl_kd_trainer.models.registry import ChatTemplates, find_family_for_processor

#: Every family's registered templates by name (``llava_v1``, ``qwen_vl``, ``qwen2_vl``, ...): a live read-only view.
CHAT_TEMPLATES = ChatTemplates()


def has_generation_markers(template: str) -> bool:
    """Whether a Jinja chat template marks assistant tokens with ``{% generation %}`` (needed for labels)."""
    return "{% generation %}" in template or "{%- generation" in template


def training_template_name(processor: Any) -> str | None:
    """The registered template with ``{% generation %}`` markers for ``processor``'s model family; ``None`` for
    an unknown family.

    The released Qwen-VL templates carry no generation markers, so answers cannot be labelled from them;
    ``qwen_vl`` / ``qwen2_vl`` render the same text for image + text turns. For LLaVA processors this is
    ``llava_v1`` (Vicuna, PULSE), which the collator uses only when a processor has no template at all.
    """
    family = find_family_for_processor(processor)
    return family.training_template_name(processor) if family is not None else None


def get_chat_template(name: str) -> str:
    """Return the Jinja chat template registered under ``name`` (``llava_v1``, ``qwen_vl``, ``qwen2_vl``, ...)."""
    if name not in CHAT_TEMPLATES:
        raise ValueError(f"Unknown chat template {name!r}. Known: {', '.join(sorted(CHAT_TEMPLATES))}.")
    return CHAT_TEMPLATES[name]


__all__ = [
    "CHAT_TEMPLATES",
    "LLAVA_V1_CHAT_TEMPLATE",
    "LLAVA_V1_SYSTEM",
    "QWEN2_VL_CHAT_TEMPLATE",
    "QWEN_VL_CHAT_TEMPLATE",
    "get_chat_template",
    "has_generation_markers",
    "training_template_name",
]
