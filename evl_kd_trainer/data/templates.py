"""Chat templates of the supported models, as Jinja strings for ``processor.chat_template``.

Each model sees a sample in its own conversation format (the dual-view pipeline renders every sample
twice). The templates accept TRL's ``messages`` format where ``content`` is either a string or a list
of ``{"type": "image"}`` / ``{"type": "text", "text": ...}`` parts.
"""

from __future__ import annotations

# PULSE-7B / LLaVA-1.5 / LLaVA-NeXT-Vicuna: LLaVA's `llava_v1` conversation (sep_style TWO, sep=" ",
# sep2="</s>"), i.e. "<system> USER: <image>\n{q} ASSISTANT: {a}</s>USER: {q2} ASSISTANT: {a2}</s>".
# No bos here: LlamaTokenizer adds "<s>" itself, and a second one would shift every position.
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
    "{% endif %}{% endfor %}{% for part in message['content'] %}{% if part['type'] == 'text' %}"
    "{{ part['text'] }}{% endif %}{% endfor %}{% endif %} "
    "{% elif message['role'] == 'assistant' %}ASSISTANT: "
    "{% generation %}"
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

CHAT_TEMPLATES: dict[str, str] = {"llava_v1": LLAVA_V1_CHAT_TEMPLATE, "qwen_vl": QWEN_VL_CHAT_TEMPLATE}


def get_chat_template(name: str) -> str:
    """Return the Jinja chat template registered under ``name`` (``llava_v1`` or ``qwen_vl``)."""
    if name not in CHAT_TEMPLATES:
        raise ValueError(f"Unknown chat template {name!r}. Known: {', '.join(sorted(CHAT_TEMPLATES))}.")
    return CHAT_TEMPLATES[name]
