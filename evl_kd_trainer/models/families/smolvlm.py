"""The SmolVLM family (``model_type`` ``smolvlm``): a small-footprint student, the kind a clinic's edge device runs.

Layout (transformers' ``SmolVLMForConditionalGeneration``, Idefics3's design): ``model.model`` holds a SigLIP-style
vision encoder, a pixel-shuffle ``connector`` (the vision-language projector) and ``text_model`` (a Llama decoder
stack, where the visual tokens are received); ``model.lm_head`` is the head.

Images: the image processor resizes an image's longest edge to ``size["longest_edge"]``, splits it into square crops
of ``max_image_size["longest_edge"]`` (the vision encoder's input) and adds the whole image resized to one crop (the
global view); an image no larger than one crop stays one crop. Every crop becomes ``image_seq_len`` visual tokens
(``(image_size // patch_size)**2 / scale_factor**2``) written into one run of ``<image>`` tokens, each run preceded by
``<fake_token_around_image>`` and a ``<row_i_col_j>`` / ``<global-img>`` tag. The model itself treats crops as images
(``pixel_values`` is ``(batch, crops, 3, H, W)``, all-zero crops are padding), and so does the adapter: each crop is
one "image" of the capture, with ``image_seq_len`` tokens; a sample's visual tokens are all its crops in order.

The stock ``SmolVLMProcessor`` requires a video processor (which needs torchvision, not importable beside the CPU
torch wheel) and the ``num2words`` package (for video prompts): :class:`SmolVLMImageOnlyProcessor` takes images and
text only. Image processing is the PIL ``SmolVLMImageProcessorPil``.

Prompts: SmolVLM-Instruct's conversation, ``"<|im_start|>User:<image>{q}<end_of_utterance>\\nAssistant: {a}
<end_of_utterance>\\n"``; the registered ``smolvlm`` template renders the same text with ``{% generation %}`` markers
(the released one has none), labels starting at the space after ``"Assistant:"``, where generation prompts end.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from transformers import SmolVLMProcessor
from transformers.image_utils import is_valid_image
from transformers.processing_utils import ProcessorMixin

from evl_kd_trainer.models.base import ModelAdapter
from evl_kd_trainer.models.families.llava import image_token_runs
from evl_kd_trainer.models.family import ModelFamily
from evl_kd_trainer.models.registry import register_family

# SmolVLM-Instruct's conversation with generation markers: a role tag ("User", "Assistant", "System") followed by ':'
# when the turn starts with an image and ': ' otherwise, the parts (text, or "<image>"), "<end_of_utterance>\n".
SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}Assistant:{% generation %} "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<end_of_utterance>\n{% endgeneration %}"
    "{% else %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}: {{ message['content'] }}"
    "{% else %}{% if message['content'] and message['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<end_of_utterance>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


class SmolVLMImageOnlyProcessor(SmolVLMProcessor):
    """``SmolVLMProcessor`` for images and text, without the video processor (torchvision) and ``num2words``.

    Also accepts a flat list of images for a batch of texts (as the Qwen-VL and LLaVA processors do), assigned to the
    texts in order by their ``<image>`` counts. ``AutoProcessor`` does not know this class: reload it with
    ``from_pretrained`` or :func:`evl_kd_trainer.models.loading.load_processor`.
    """

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        image_seq_len: int = 169,
        chat_template: str | None = None,
        **kwargs: Any,
    ) -> None:
        # SmolVLMProcessor.__init__ refuses to run without num2words and pairs a video processor; set the image
        # attributes it sets (the tokens it reads from the tokenizer, with SmolVLM's defaults) and skip it.
        self.fake_image_token = getattr(tokenizer, "fake_image_token", "<fake_token_around_image>")
        self.image_token = getattr(tokenizer, "image_token", "<image>")
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.end_of_utterance_token = getattr(tokenizer, "end_of_utterance_token", "<end_of_utterance>")
        self.global_image_token = getattr(tokenizer, "global_image_token", "<global-img>")
        self.image_seq_len = image_seq_len
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)

    def prepare_inputs_layout(self, images: Any = None, text: Any = None, videos: Any = None, **kwargs: Any) -> Any:
        if videos is not None:
            raise ValueError(f"{type(self).__name__} takes images and text only.")
        flat = isinstance(images, (list, tuple)) and len(images) > 0 and all(is_valid_image(i) for i in images)
        if flat and isinstance(text, (list, tuple)) and len(text) > 1:
            counts = [sample.count(self.image_token) for sample in text]
            if sum(counts) == len(images):
                remaining = iter(images)
                images = [[next(remaining) for _ in range(count)] for count in counts]
        return super().prepare_inputs_layout(images=images, text=text, videos=videos, **kwargs)

    def apply_chat_template(self, conversation: Any, chat_template: str | None = None, **kwargs: Any) -> Any:
        # The stock method only adds video sampling arguments (which read the absent video processor).
        return ProcessorMixin.apply_chat_template(self, conversation, chat_template, **kwargs)


def tokens_per_crop(config: Any) -> int:
    """Visual tokens of one crop: ``(image_size // patch_size)**2 / scale_factor**2`` (the model's ``image_seq_len``)."""
    vision = config.vision_config
    return int((vision.image_size // vision.patch_size) ** 2 // config.scale_factor**2)


def crops_per_image(processor: Any, image: Any) -> int:
    """How many crops ``processor``'s image processor makes of ``image``: a ``rows x cols`` grid plus the global view,
    or one crop for an image that was not split."""
    layout = processor.image_processor(images=[[image]], return_row_col_info=True)
    rows, cols = int(layout["rows"][0][0]), int(layout["cols"][0][0])
    return rows * cols + 1 if rows * cols else 1


def visual_tokens_per_image(processor: Any, image: Any) -> int:
    """The visual tokens ``image`` becomes for a SmolVLM with ``processor`` (crops x ``image_seq_len``)."""
    return crops_per_image(processor, image) * int(processor.image_seq_len)


class SmolVLMAdapter(ModelAdapter):
    """SmolVLM: the language model is ``model.model.text_model``; one run of ``<image>`` tokens per crop."""

    input_keys = ("input_ids", "attention_mask", "pixel_values", "pixel_attention_mask")

    def language_model(self, model: torch.nn.Module) -> torch.nn.Module:
        return self.base_model(model).text_model

    def image_token_counts(self, inputs: Mapping[str, Any]) -> list[int]:
        input_ids = inputs.get("input_ids")
        if input_ids is None:
            raise ValueError("SmolVLM visual tokens are located through input_ids; the batch has none.")
        runs = image_token_runs(self.image_token_mask(input_ids))
        expected, per_crop = self.num_images(inputs), tokens_per_crop(self.config)
        if len(runs) != expected or any(run != per_crop for run in runs):
            raise ValueError(
                f"Found image-token runs {runs} for {expected} crops of {per_crop} tokens: the processor does not "
                "match the model (image_seq_len, or crops without their <fake_token_around_image> separator)."
            )
        return runs

    def num_images(self, inputs: Mapping[str, Any]) -> int:
        """Real crops in the batch: ``pixel_values`` is ``(batch, crops, 3, H, W)``; all-zero crops pad it (the
        model's own rule)."""
        pixels = inputs.get("pixel_values")
        if pixels is None:
            return 0
        return int((pixels.flatten(2) != 0).any(-1).sum())


@register_family
class SmolVLMFamily(ModelFamily):
    """SmolVLM (SmolVLM-256M / 500M / 2B-Instruct and SmolVLM2), prompted in its Instruct conversation."""

    name = "smolvlm"
    model_types = ("smolvlm",)
    adapters = {"smolvlm": SmolVLMAdapter}
    chat_templates = {"smolvlm": SMOLVLM_CHAT_TEMPLATE}
    replaces_unmarked_template = True  # the released template renders the same text without generation markers
    conversation_name = "SmolVLM"
    projector_patterns = ("connector.modality_projection",)

    def processor_classes(self) -> tuple[type, ...]:
        return (SmolVLMProcessor,)

    def own_processor_classes(self) -> tuple[type, ...]:
        return (SmolVLMImageOnlyProcessor,)

    def check_processor(self, model: Any, processor: Any, role: str) -> None:
        # A mismatch would only surface in the first forward ("Image features and image tokens do not match"), after
        # the teacher was loaded: refuse it here.
        config = getattr(model, "config", None)
        if config is None or not hasattr(processor, "image_seq_len"):
            return
        expected = tokens_per_crop(config)
        if int(processor.image_seq_len) != expected:
            raise ValueError(
                f"The {role} processor expands each crop to image_seq_len={processor.image_seq_len} tokens but the "
                f"{role} model makes {expected} per crop: the processor does not belong to this model."
            )
        crop = (getattr(processor.image_processor, "max_image_size", None) or {}).get("longest_edge")
        if crop is not None and int(crop) != int(config.vision_config.image_size):
            raise ValueError(
                f"The {role} processor cuts {crop}-px crops but the {role} model's vision encoder takes "
                f"{config.vision_config.image_size} px (image_processor.max_image_size['longest_edge'])."
            )


__all__ = [
    "SMOLVLM_CHAT_TEMPLATE",
    "SmolVLMAdapter",
    "SmolVLMFamily",
    "SmolVLMImageOnlyProcessor",
    "crops_per_image",
    "tokens_per_crop",
    "visual_tokens_per_image",
]
