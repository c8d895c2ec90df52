"""The dual-view collator: every sample rendered once per model, each in its own chat template.

The student view (``input_ids``, ``attention_mask``, ``labels``, ``pixel_values``, ``image_grid_thw``,
``mm_token_type_ids``, ... whatever the student processor returns) feeds the student model directly;
the teacher view carries the same keys prefixed with ``teacher_`` (for LLaVA-NeXT: ``teacher_pixel_values``
with the anyres crops and ``teacher_image_sizes``). Both views also get a boolean ``response_mask``
(``labels != -100``) over the assistant answers.

Labels are the chat templates' ``{% generation %}`` spans, i.e. each answer plus the end-of-turn token the
model has to emit: ``"a1<|im_end|>\\n"`` for Qwen (the newline after ``<|im_end|>`` is inside the span, as in
TRL's own Qwen-VL training templates and ``assistant_only_loss``), ``" a1</s>"`` for Vicuna / llava_v1 (from the
space after ``ASSISTANT:``, as original LLaVA labels). A LLaVA processor's view is tokenized as original LLaVA's
training did, the text between images piece by piece (:mod:`evl_kd_trainer.data.llava_tokens`): the exact
sequence PULSE-7B was trained on.

Samples are processed one at a time (the processors still do the image work), so that truncation, drops
and decode errors can be decided and reported per record, then right-padded into one batch. Everything is decided
before any model runs: an over-long sample is cut or dropped, a sample whose image cannot be decoded is dropped
(``on_bad_image="skip"``), and literal special-token text in a record is escaped so it stays text
(``special_token_text="escape"``); each case is counted in ``stats``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from evl_kd_trainer.data.images import BadImageError, ImageLimits
from evl_kd_trainer.data.llava_tokens import encode_image_pieces
from evl_kd_trainer.data.messages import messages_with_images
from evl_kd_trainer.data.special_text import SPECIAL_TEXT_MODES, SpecialTextEscaper, special_token_strings
from evl_kd_trainer.data.templates import CHAT_TEMPLATES, has_generation_markers
from evl_kd_trainer.models.registry import find_family_for_processor

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
TRUNCATION_MODES = ("after_image", "drop")
BAD_IMAGE_MODES = ("skip", "error")
# Processor outputs with one value per token; everything else is per image and is concatenated.
PER_TOKEN_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids", "assistant_masks")

# Drop reasons (stats keys are "dropped_<reason>").
TOO_LONG = "too_long"
IMAGE_CUT = "image_cut"
NO_RESPONSE_LEFT = "no_response_left"
BAD_IMAGE = "bad_image"
SPECIAL_TOKEN_TEXT = "special_token_text"


def truncation_length(
    input_ids: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    max_length: int | None,
    image_token_id: int | None,
    vision_end_token_id: int | None = None,
    mode: str = "after_image",
) -> tuple[int | None, str | None]:
    """Where to cut one sample: ``(length, None)`` to keep ``input_ids[:length]``, or ``(None, reason)`` to drop it.

    A cut may only fall after the last image token (and the ``<|vision_end|>`` closing it, if any), because a
    partial image no longer matches its ``pixel_values``; with ``mode="drop"`` any over-long sample is
    dropped. A cut that leaves no answer token would train on nothing, so that sample is dropped too.
    """
    length = int(input_ids.shape[0])
    if max_length is None or length <= max_length:
        return length, None
    if mode == "drop":
        return None, TOO_LONG
    if image_token_id is not None:
        positions = (input_ids == image_token_id).nonzero()
        if positions.numel():
            protected_end = int(positions[-1]) + 1
            if (
                vision_end_token_id is not None
                and protected_end < length
                and input_ids[protected_end] == vision_end_token_id
            ):
                protected_end += 1
            if protected_end > max_length:
                return None, IMAGE_CUT
    if not bool(response_mask[:max_length].any()):
        return None, NO_RESPONSE_LEFT
    return max_length, None


@dataclass
class _View:
    """One model's way of seeing a sample: its processor, template, length limit and output key prefix."""

    name: str
    prefix: str
    processor: Any
    chat_template: str
    max_length: int | None
    pad_token_id: int
    image_token_id: int | None
    vision_end_token_id: int | None
    # Original LLaVA's models (PULSE) were trained on prompts tokenized piece by piece between the images.
    image_pieces: bool = False


@dataclass
class _Encoded:
    """One sample in one view, unpadded: per-token tensors of shape (L,) and per-image tensors."""

    per_token: dict[str, torch.Tensor]
    per_image: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def length(self) -> int:
        return int(self.per_token["input_ids"].shape[0])

    def truncate(self, length: int) -> None:
        self.per_token = {key: value[:length] for key, value in self.per_token.items()}


def _make_view(name: str, prefix: str, processor: Any, chat_template: str | None, max_length: int | None) -> _View:
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None:
        raise ValueError(f"The {name} processor {type(processor).__name__} has no tokenizer.")
    family = find_family_for_processor(processor)
    if chat_template is not None:
        template = CHAT_TEMPLATES.get(chat_template, chat_template)  # a registered name or Jinja text
    else:
        template = getattr(processor, "chat_template", None)
        fallback = family.training_template_name(processor) if family is not None else None
        # Released templates without a {% generation %} block (Qwen-VL's) are replaced by the family's marked copy of
        # the same conversation, so the answers can be labelled. Where a processor's own template may be another
        # conversation altogether (LLaVA-NeXT also comes with Mistral, Llama-3 or Qwen language models, whose
        # conversations are not llava_v1), the family's template is used only when the processor has none.
        replaces = family is not None and family.replaces_unmarked_template
        if fallback is not None and (not template or (replaces and not has_generation_markers(template))):
            logger.warning(
                "The %s processor's chat template %s; using evl_kd_trainer's %r template (the %s conversation "
                "format, with {%% generation %%} markers). Pass a template to override.",
                name, "has no {% generation %} block" if template else "is missing", fallback,
                "same" if template else family.conversation_name,
            )  # fmt: skip
            template = CHAT_TEMPLATES[fallback]
    if not template:
        raise ValueError(
            f"The {name} processor has no chat template: set processor.chat_template or pass one "
            "(e.g. evl_kd_trainer.data.templates.get_chat_template('qwen_vl' | 'llava_v1'))."
        )
    if not has_generation_markers(template):
        raise ValueError(f"The {name} chat template has no {{% generation %}} block, so answers cannot be labelled.")
    pad_token_id = tokenizer.pad_token_id
    if pad_token_id is None:
        raise ValueError(f"The {name} tokenizer has no pad token: set tokenizer.pad_token.")
    if max_length is not None and max_length <= 0:
        raise ValueError(f"{name} max_length must be positive, got {max_length}.")
    image_token_id = getattr(processor, "image_token_id", None)
    if image_token_id is None and getattr(processor, "image_token", None):
        image_token_id = tokenizer.convert_tokens_to_ids(processor.image_token)
    return _View(
        name=name,
        prefix=prefix,
        processor=processor,
        chat_template=template,
        max_length=max_length,
        pad_token_id=pad_token_id,
        image_token_id=image_token_id,
        vision_end_token_id=getattr(processor, "vision_end_token_id", None),
        image_pieces=family is not None and family.tokenizes_text_between_images and image_token_id is not None,
    )


class DualViewCollator:
    """Collate TRL-format examples into a student view and (optionally) a ``teacher_``-prefixed teacher view.

    Args:
        processor: the student's processor; its ``chat_template`` renders the student view.
        teacher_processor: the teacher's processor (its own template, e.g. llava_v1 for PULSE). ``None``
            gives a plain student SFT collator, usable as ``data_collator`` of TRL's ``SFTTrainer``.
        max_length / teacher_max_length: per-view token limits (``None``: no limit). Each view is cut by
            its own limit, since the teacher's image tokens (2880 per ECG for PULSE) outnumber the student's.
        truncation: ``"after_image"`` cuts over-long samples after their last image's tokens and drops
            those whose cut would fall inside an image or leave no answer token; ``"drop"`` drops every
            over-long sample. A sample dropped in one view is dropped from both; each drop is logged.
        pad_to_multiple_of: round each view's padded length up to a multiple of this.
        chat_template / teacher_chat_template: override the processors' templates: a registered name
            (``"qwen_vl"``, ``"qwen2_vl"``, ``"llava_v1"``) or Jinja text. By default each processor's own
            template is used; one without ``{% generation %}`` markers (the released Qwen-VL templates) is
            replaced by the registered template of its model family, with a warning.
        on_bad_image: ``"skip"`` (default) drops a sample whose image cannot be decoded or breaks the
            ``image_limits`` (counted as ``dropped_bad_image``, logged with the record and the file); ``"error"``
            raises the :class:`~evl_kd_trainer.data.images.BadImageError`.
        special_token_text: what to do with a record whose text holds a special token of either tokenizer
            (``<|im_end|>``, ``</s>``, ``<|image_pad|>``, ``<image>``...): ``"escape"`` (default: a zero-width
            space after its first character keeps it text in both views; counted as ``escaped_special_text``),
            ``"skip"`` (drop the sample, counted as ``dropped_special_token_text``) or ``"error"``.
        image_limits: pixel-count, aspect-ratio and decode-size limits checked before an image is decoded.
        return_record_ids: add ``record_ids`` to each batch: the ids (:func:`evl_kd_trainer.cache.ids.record_id`:
            the ``id`` field, else a content hash) of the samples the batch holds, in row order, after drops and
            replacements. A list of strings, not a tensor: whoever reads it must pop it before the model's forward
            (the teacher-feature cache looks the batch's teacher features up by these ids). Off by default.
        escape_also: further processors whose special-token strings are escaped in the record text, though their
            view is not rendered (a run from a teacher cache escapes the cached teacher's strings, as its build did).

    ``stats`` counts ``samples``, ``truncated`` (in any view), ``student_truncated``, ``teacher_truncated``,
    ``dropped``, ``dropped_<reason>`` (``too_long``, ``image_cut``, ``no_response_left``, ``bad_image``,
    ``special_token_text``) and ``escaped_special_text`` since construction (per DataLoader worker process when
    ``num_workers > 0``). Examples: ``{"messages": [...], "images": [PIL | path | {"path", "bytes"}],
    "id": optional}``; the ``id`` is used in error and warning messages.
    """

    def __init__(
        self,
        processor: Any,
        teacher_processor: Any | None = None,
        max_length: int | None = None,
        teacher_max_length: int | None = None,
        truncation: str = "after_image",
        pad_to_multiple_of: int | None = None,
        chat_template: str | None = None,
        teacher_chat_template: str | None = None,
        on_bad_image: str = "skip",
        special_token_text: str = "escape",
        image_limits: ImageLimits | None = None,
        return_record_ids: bool = False,
        escape_also: Sequence[Any] = (),
    ) -> None:
        if truncation not in TRUNCATION_MODES:
            raise ValueError(f"truncation must be one of {TRUNCATION_MODES}, got {truncation!r}.")
        if on_bad_image not in BAD_IMAGE_MODES:
            raise ValueError(f"on_bad_image must be one of {BAD_IMAGE_MODES}, got {on_bad_image!r}.")
        if special_token_text not in SPECIAL_TEXT_MODES:
            raise ValueError(f"special_token_text must be one of {SPECIAL_TEXT_MODES}, got {special_token_text!r}.")
        self.on_bad_image = on_bad_image
        self.special_token_text = special_token_text
        self.image_limits = image_limits or ImageLimits()
        if pad_to_multiple_of is not None and pad_to_multiple_of <= 0:
            raise ValueError(f"pad_to_multiple_of must be positive, got {pad_to_multiple_of}.")
        self.truncation = truncation
        self.pad_to_multiple_of = pad_to_multiple_of
        self.views = [_make_view("student", "", processor, chat_template, max_length)]
        if teacher_processor is not None:
            self.views.append(
                _make_view("teacher", "teacher_", teacher_processor, teacher_chat_template, teacher_max_length)
            )
        # One escaper for both views: the record's text must read the same to the student and the teacher.
        # `escape_also`: processors whose view is not rendered here but whose strings the text must not contain
        # either (a run from a teacher cache: the teacher's view was rendered, and escaped, when it was built).
        processors = [*(view.processor for view in self.views), *escape_also]
        self._escaper = SpecialTextEscaper(special_token_strings(processors))
        self.stats: dict[str, int] = {"samples": 0, "truncated": 0, "dropped": 0}
        self.return_record_ids = return_record_ids

    @property
    def num_dropped(self) -> int:
        return self.stats["dropped"]

    @property
    def num_truncated(self) -> int:
        return self.stats["truncated"]

    def _count(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("DualViewCollator got an empty list of examples.")
        kept: list[list[_Encoded]] = []  # per kept sample, one encoding per view
        kept_examples: list[dict[str, Any]] = []
        dropped: list[str] = []
        for position, example in enumerate(examples):
            record = repr(example.get("id")) if example.get("id") is not None else f"#{position} of the batch"
            encodings = self._encode_sample(example, record)
            if encodings is None:
                dropped.append(record)
            else:
                kept.append(encodings)
                kept_examples.append(example)
        if not kept:
            replacement = self._replacement()
            if replacement is None:
                raise ValueError(
                    f"All {len(examples)} samples of the batch were dropped ({', '.join(dropped)}): see the warnings "
                    f"above for each reason (too long: raise max_length / teacher_max_length). Stats: {self.stats}"
                )
            kept.append(replacement)
            kept_examples.append(self._replacement_example)
        batch: dict[str, Any] = {}
        for index, view in enumerate(self.views):
            batch.update(self._pad_view(view, [encodings[index] for encodings in kept]))
        if self.return_record_ids:
            # (teacher-feature cache) which records the rows are; a list of str, popped before any forward
            from evl_kd_trainer.cache.ids import record_id

            batch["record_ids"] = [record_id(example) for example in kept_examples]
        return batch

    def set_fallback_dataset(self, dataset: Any, max_tries: int = 64) -> None:
        """Where a replacement comes from when every sample of a batch is dropped (a map-style dataset).

        A batch cannot be empty (every rank must run its forward), so rather than stopping the run, the collator
        takes the next sample of ``dataset`` that encodes (in a fixed order, from a cursor that moves on at each
        use) and counts it as ``replaced_empty_batch``: one good sample is then seen once more in the epoch.
        """
        self._fallback = dataset if dataset is not None and hasattr(dataset, "__getitem__") else None
        self._fallback_tries = max_tries
        self._fallback_cursor = 0

    def _replacement(self) -> list[_Encoded] | None:
        dataset = getattr(self, "_fallback", None)
        if dataset is None or not len(dataset):
            return None
        for _ in range(min(self._fallback_tries, len(dataset))):
            index = self._fallback_cursor % len(dataset)
            self._fallback_cursor += 1
            example = dataset[index]
            encodings = self._encode_sample(example, f"replacement #{index}")
            if encodings is not None:
                self._replacement_example = example  # its record id, for `return_record_ids`
                self._count("replaced_empty_batch")
                logger.warning(
                    "DualViewCollator: every sample of a batch was dropped; trained on sample #%d instead. Stats: %s",
                    index, self.stats,
                )  # fmt: skip
                return encodings
        return None

    def _encode_sample(self, example: dict[str, Any], record: str) -> list[_Encoded] | None:
        """Render and tokenize ``example`` in every view; ``None`` if a view had to drop it."""
        self._count("samples")
        try:
            messages = messages_with_images(example, self.image_limits)
        except BadImageError as error:
            if self.on_bad_image == "error":
                raise
            return self._drop(record, BAD_IMAGE, str(error))
        found = self._escaper.find(messages)
        if found:
            shown = ", ".join(dict.fromkeys(found))
            if self.special_token_text == "error":
                raise ValueError(
                    f"record {record}: its text holds special-token text ({shown}) that would become control "
                    "tokens; use special_token_text='escape' or 'skip'."
                )
            if self.special_token_text == "skip":
                return self._drop(record, SPECIAL_TOKEN_TEXT, f"its text holds special-token text ({shown})")
            messages = self._escaper.escape(messages)
            self._count("escaped_special_text")
        encodings, cut_views = [], []
        for view in self.views:
            encoded = self._encode(view, messages, record)
            labels = encoded.per_token["labels"]
            length, reason = truncation_length(
                encoded.per_token["input_ids"],
                labels != IGNORE_INDEX,
                max_length=view.max_length,
                image_token_id=view.image_token_id,
                vision_end_token_id=view.vision_end_token_id,
                mode=self.truncation,
            )
            if reason is not None:
                self._count("dropped")
                self._count(f"dropped_{reason}")
                logger.warning(
                    "DualViewCollator dropped record %s: %s view has %d tokens > max_length %d (%s). Stats: %s",
                    record, view.name, encoded.length, view.max_length, reason, self.stats,
                )  # fmt: skip
                return None
            if length < encoded.length:
                encoded.truncate(length)
                cut_views.append(view.name)
            encodings.append(encoded)
        for name in cut_views:
            self._count(f"{name}_truncated")
        if cut_views:
            self._count("truncated")
        return encodings

    def _drop(self, record: str, reason: str, detail: str) -> None:
        self._count("dropped")
        self._count(f"dropped_{reason}")
        logger.warning("DualViewCollator dropped record %s: %s (%s). Stats: %s", record, detail, reason, self.stats)

    def _encode(self, view: _View, messages: list[dict[str, Any]], record: str) -> _Encoded:
        try:
            if view.image_pieces:
                output = encode_image_pieces(view.processor, messages, view.chat_template)
            else:
                output = view.processor.apply_chat_template(
                    messages,
                    chat_template=view.chat_template,
                    tokenize=True,
                    return_dict=True,
                    return_tensors="pt",
                    return_assistant_tokens_mask=True,
                )
        except Exception as error:
            raise ValueError(f"record {record}: the {view.name} processor failed: {error}") from error
        per_token = {key: output[key][0] for key in PER_TOKEN_KEYS if key in output}
        assistant = per_token.pop("assistant_masks").bool()
        per_token["labels"] = per_token["input_ids"].masked_fill(~assistant, IGNORE_INDEX)
        per_image = {key: value for key, value in output.items() if key not in PER_TOKEN_KEYS}
        return _Encoded(per_token=per_token, per_image=per_image)

    def _pad_view(self, view: _View, encodings: list[_Encoded]) -> dict[str, torch.Tensor]:
        """Right-pad the per-token tensors, concatenate the per-image ones, prefix every key."""
        width = max(encoded.length for encoded in encodings)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        pad_values = {"input_ids": view.pad_token_id, "labels": IGNORE_INDEX}
        out: dict[str, torch.Tensor] = {}
        token_keys = dict.fromkeys(key for encoded in encodings for key in encoded.per_token)
        for key in token_keys:
            # A key only some samples have (e.g. a text-only sample's processor output) is 0 for the others.
            rows = [encoded.per_token.get(key, torch.zeros(encoded.length, dtype=torch.long)) for encoded in encodings]
            padded = torch.full((len(rows), width), pad_values.get(key, 0), dtype=rows[0].dtype)
            for row, values in enumerate(rows):
                padded[row, : values.shape[0]] = values
            out[key] = padded
        out["response_mask"] = out["labels"] != IGNORE_INDEX
        image_keys = dict.fromkeys(key for encoded in encodings for key in encoded.per_image)
        for key in image_keys:
            out[key] = _concat_padded([encoded.per_image[key] for encoded in encodings if key in encoded.per_image])
        return {view.prefix + key: value for key, value in out.items()}


def _concat_padded(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate along dim 0, zero-padding the other dims to the largest size.

    LLaVA-NeXT's processor pads every image's crops to the batch's largest crop count; processing one
    sample at a time gives different counts, which this restores (the model slices the real crops out
    again by ``image_sizes``).
    """
    shape = [max(tensor.shape[dim] for tensor in tensors) for dim in range(1, tensors[0].dim())]
    padded = []
    for tensor in tensors:
        if list(tensor.shape[1:]) != shape:
            full = tensor.new_zeros((tensor.shape[0], *shape))
            full[(slice(None), *(slice(0, size) for size in tensor.shape[1:]))] = tensor
            tensor = full
        padded.append(tensor)
    return torch.cat(padded, dim=0)
