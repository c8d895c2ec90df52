"""Conversion of LLaVA / ECGInstruct ``conversations`` into TRL's conversational ``messages`` format.

LLaVA records mark where an image goes with an ``<image>`` placeholder inside the human text. TRL (and
both chat templates in :mod:`evl_kd_trainer.data.templates`) instead expect structured content parts,
``{"type": "image"}`` and ``{"type": "text", "text": ...}``, so each model's template decides how to
render the image (``<image>\\n`` for llava_v1, ``<|vision_start|><|image_pad|><|vision_end|>`` for Qwen).
"""

from __future__ import annotations

from typing import Any

from evl_kd_trainer.data.images import ImageLimits, load_image

IMAGE_PLACEHOLDER = "<image>"

# LLaVA's speaker names -> chat roles. "system" is not in ECGInstruct but appears in other LLaVA data.
ROLE_MAP: dict[str, str] = {"human": "user", "gpt": "assistant", "system": "system"}


def user_content_parts(text: str) -> list[dict[str, Any]]:
    """Split a human turn at its ``<image>`` placeholders into image and text parts, in order.

    The placeholder is removed and the text on each side is stripped, which drops the ``"\\n"`` LLaVA
    puts after ``<image>`` (the templates add their own separator). Empty text pieces are left out, so
    ``"<image>\\nWhat is this?"`` gives ``[{"type": "image"}, {"type": "text", "text": "What is this?"}]``.
    """
    parts: list[dict[str, Any]] = []
    pieces = text.split(IMAGE_PLACEHOLDER)
    for index, piece in enumerate(pieces):
        if index > 0:
            parts.append({"type": "image", "text": None})
        piece = piece.strip()
        if piece:
            parts.append({"type": "text", "text": piece})
    return parts


def conversations_to_messages(conversations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Convert validated LLaVA ``conversations`` ({"from", "value"}) into TRL ``messages``.

    Every ``content`` becomes a list of parts with the same keys (``type``, ``text``; ``text`` is None for
    images) so that a column of such messages has one Arrow schema. Assistant text is kept verbatim:
    the answer is the training target and its whitespace is part of it. Roles must already have been
    checked (:func:`evl_kd_trainer.data.validation.check_conversations`).
    """
    messages = []
    for turn in conversations:
        role = ROLE_MAP[turn["from"]]
        value = turn["value"]
        if role == "user":
            content = user_content_parts(value)
        else:
            content = [{"type": "text", "text": value}]
        messages.append({"role": role, "content": content})
    return messages


def count_image_parts(messages: list[dict[str, Any]]) -> int:
    """Number of ``{"type": "image"}`` parts in TRL ``messages`` (string contents hold none)."""
    return sum(
        1
        for message in messages
        if not isinstance(message.get("content"), str)
        for part in message.get("content") or []
        if part.get("type") == "image"
    )


def messages_with_images(example: dict[str, Any], limits: ImageLimits | None = None) -> list[dict[str, Any]]:
    """TRL messages of ``example`` with its decoded ``images`` placed in the image parts, in order.

    Uses TRL's own ``prepare_multimodal_messages`` so string contents behave exactly as in TRL (images go
    before the first user text); a count mismatch is re-raised naming the record ``id``. Images are decoded by
    :func:`~evl_kd_trainer.data.images.load_image` within ``limits``; a bad one raises its ``BadImageError``.
    """
    from trl.data_utils import prepare_multimodal_messages  # heavy import, only needed at collation time

    record_id = example.get("id")
    if "messages" not in example:
        raise KeyError(f"record {record_id!r}: expected a 'messages' key (TRL format), got {sorted(example)}")
    raw_images = example.get("images")
    if raw_images is None and example.get("image") is not None:
        raw_images = [example["image"]]
    images = [
        load_image(image, record_id=record_id, index=i, limits=limits) for i, image in enumerate(raw_images or [])
    ]
    try:
        return prepare_multimodal_messages(example["messages"], images=images)
    except ValueError as error:
        raise ValueError(f"record {record_id!r}: {error}") from error
