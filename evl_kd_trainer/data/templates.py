"""Chat templates of the supported models, as Jinja strings for ``processor.chat_template``.

Each model sees a sample in its own conversation format (the dual-view pipeline renders every sample
twice). The templates accept TRL's ``messages`` format where ``content`` is either a string or a list
of ``{"type": "image"}`` / ``{"type": "text", "text": ...}`` parts.
"""

from __future__ import annotations

from typing import Any

# PULSE-7B / LLaVA-1.5 / LLaVA-NeXT-Vicuna: LLaVA's `llava_v1` conversation (sep_style TWO, sep=" ",
# sep2="</s>"), i.e. "<system> USER: <image>\n{q} ASSISTANT: {a}</s>USER: {q2} ASSISTANT: {a2}</s>".
# No bos here: LlamaTokenizer adds "<s>" itself, and a second one would shift every position. As LLaVA's
# preprocessing does, every image of a turn goes first; the turn's text pieces follow, joined by a space.
# The labels (`{% generation %}`) start at the space after "ASSISTANT:", as LLaVA's preprocess_v1 masks only the
# instruction's tokens up to that colon: an answer that does not begin with a word ("72 bpm") starts with a lone
# "▁" token, which PULSE was trained to predict.
LLAVA_V1_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)

LLAVA_V1_CHAT_TEMPLATE = (
    "{% set system = namespace(text='" + LLAVA_V1_SYSTEM.replace("'", "\\'") + "') %}"
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{% if message['content'] is string %}{% set system.text = message['content'] %}"
    "{% else %}{% set system.text = message['content'] | selectattr('type', 'equalto', 'text')"
    " | map(attribute='text') | join(' ') %}{% endif %}{% endif %}{% endfor %}"
    "{{ system.text }} "
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n"
    "{% endif %}{% endfor %}"
    "{{ message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') }}"
    "{% endif %} "
    "{% elif message['role'] == 'assistant' %}ASSISTANT:"
    "{% generation %} "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}</s>"
    "{% endgeneration %}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

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

CHAT_TEMPLATES: dict[str, str] = {
    "llava_v1": LLAVA_V1_CHAT_TEMPLATE,
    "qwen_vl": QWEN_VL_CHAT_TEMPLATE,
    "qwen2_vl": QWEN2_VL_CHAT_TEMPLATE,
}


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
    from transformers import LlavaNextProcessor, LlavaProcessor, Qwen2_5_VLProcessor, Qwen2VLProcessor

    try:
        from transformers import Qwen3VLProcessor
    except ImportError:  # transformers without Qwen3-VL
        Qwen3VLProcessor = ()  # noqa: N806
    if Qwen3VLProcessor and isinstance(processor, Qwen3VLProcessor):
        return "qwen_vl"
    if isinstance(processor, (Qwen2VLProcessor, Qwen2_5_VLProcessor)):
        return "qwen2_vl"
    if isinstance(processor, (LlavaNextProcessor, LlavaProcessor)):
        return "llava_v1"
    return None


def get_chat_template(name: str) -> str:
    """Return the Jinja chat template registered under ``name`` (``llava_v1``, ``qwen_vl`` or ``qwen2_vl``)."""
    if name not in CHAT_TEMPLATES:
        raise ValueError(f"Unknown chat template {name!r}. Known: {', '.join(sorted(CHAT_TEMPLATES))}.")
    return CHAT_TEMPLATES[name]
