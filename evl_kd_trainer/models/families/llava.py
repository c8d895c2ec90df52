"""The LLaVA family: LLaVA-1.5 and LLaVA-NeXT with transformers' own packing (teachers, PULSE-7B's base layout).

LLaVA-NeXT's per-image token count depends on its packing (unpad + newline tokens in transformers;
``(1 + crops) * patches`` in PULSE's flat packing, :mod:`evl_kd_trainer.models.families.llava_flat`). Instead of
re-deriving either formula, the split is read from ``input_ids``: the processor expands each ``<image>`` into one
contiguous run of image tokens, and the llava_v1 template separates images (``"<image>\\n"``), so the runs are the
images. The number of runs is checked against the number of images, which makes adjacent images without a separator
fail loudly rather than merge.

Prompts: LLaVA's ``llava_v1`` conversation (Vicuna), in training and evaluation, as PULSE was trained and evaluated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from transformers import LlavaNextProcessor, LlavaProcessor

from evl_kd_trainer.models.base import ModelAdapter
from evl_kd_trainer.models.family import ModelFamily
from evl_kd_trainer.models.registry import register_family

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


class LlavaNextAdapter(_LlavaFamilyAdapter):
    """LLaVA-NeXT (stock ``spatial_unpad`` packing or PULSE's ``flat`` packing)."""

    input_keys = ("input_ids", "attention_mask", "pixel_values", "image_sizes")

    def num_images(self, inputs: Mapping[str, Any]) -> int:
        sizes = inputs.get("image_sizes")
        if sizes is not None:
            return int(sizes.shape[0])
        pixels = inputs.get("pixel_values")
        return 0 if pixels is None else int(pixels.shape[0])


class LlavaAdapter(_LlavaFamilyAdapter):
    """LLaVA-1.5: one crop per image, ``image_seq_length`` tokens each."""

    input_keys = ("input_ids", "attention_mask", "pixel_values")

    def num_images(self, inputs: Mapping[str, Any]) -> int:
        pixels = inputs.get("pixel_values")
        return 0 if pixels is None else int(pixels.shape[0])


@register_family
class LlavaFamily(ModelFamily):
    """LLaVA-1.5 and LLaVA-NeXT (stock packing); prompted with ``llava_v1``."""

    name = "llava"
    model_types = ("llava_next", "llava")
    adapters = {"llava_next": LlavaNextAdapter, "llava": LlavaAdapter}
    template_model_types = ("llava_llama",)
    chat_templates = {"llava_v1": LLAVA_V1_CHAT_TEMPLATE}
    # LLaVA-NeXT also ships with Mistral, Llama-3 or Qwen language models, whose conversations are not llava_v1:
    # a processor's own template is replaced only when it has none.
    replaces_unmarked_template = False
    tokenizes_text_between_images = True
    conversation_name = "Vicuna / LLaVA-1.5"
    projector_patterns = ("multi_modal_projector",)

    def processor_classes(self) -> tuple[type, ...]:
        return (LlavaNextProcessor, LlavaProcessor)

    def eval_template(self, processor: Any) -> str | None:
        # PULSE was trained and evaluated with llava_v1, whatever template a converted processor carries.
        return LLAVA_V1_CHAT_TEMPLATE


# Model types prompted with llava_v1 by default (PULSE-7B and the LLaVA checkpoints it derives from; `llava_llama`
# is original LLaVA's own format, which only the converter reads).
LLAVA_MODEL_TYPES = frozenset(LlavaFamily.model_types + LlavaFamily.template_model_types)

__all__ = [
    "LLAVA_MODEL_TYPES",
    "LLAVA_V1_CHAT_TEMPLATE",
    "LLAVA_V1_SYSTEM",
    "LlavaAdapter",
    "LlavaFamily",
    "LlavaNextAdapter",
    "image_token_runs",
]
