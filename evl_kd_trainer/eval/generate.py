"""Batched greedy generation with any supported VLM, each model prompted in its own conversation format.

A record's question becomes TRL ``messages`` (:func:`evl_kd_trainer.data.messages.user_content_parts`, the
same conversion training uses), rendered with the template the model's family prompts with
(:meth:`~evl_kd_trainer.models.family.ModelFamily.eval_template`): LLaVA-family models (PULSE-7B and other teachers)
with ``llava_v1`` as PULSE was trained and evaluated (its prompt ends ``"ASSISTANT:"``), Qwen-VL students with their
processor's own template. Prompts are left-padded so that every row of a batch
ends where generation starts; decoding is greedy (``do_sample=False``, one beam), as PULSE's evaluation.

A generation that stops without an end-of-sequence token because it reached ``max_new_tokens`` is flagged
(``hit_max_new_tokens``): its answer may be cut, and the report counts such answers per split.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from evl_kd_trainer.data.messages import load_image, user_content_parts
from evl_kd_trainer.data.templates import CHAT_TEMPLATES
from evl_kd_trainer.eval.records import EvalRecord, RecordError
from evl_kd_trainer.models.families.llava import LLAVA_MODEL_TYPES  # noqa: F401  (re-exported)
from evl_kd_trainer.models.registry import find_family_for_model_type

logger = logging.getLogger(__name__)

AUTO_TEMPLATE = "auto"
PROCESSOR_TEMPLATE = "processor"
UNREADABLE_IMAGE_POLICIES = ("error", "skip")


def resolve_chat_template(model_type: str, processor: Any, requested: str | None = AUTO_TEMPLATE) -> str:
    """The Jinja template a model is prompted with.

    ``requested``: ``"auto"`` (the model family's choice: ``llava_v1`` for LLaVA model types, else the processor's
    own template, else the family's registered one, e.g. ``qwen_vl`` for Qwen-VL types), ``"processor"`` (the
    processor's own), a name from :data:`~evl_kd_trainer.data.templates.CHAT_TEMPLATES` (``llava_v1``, ``qwen_vl``)
    or Jinja text.
    """
    own = getattr(processor, "chat_template", None)
    if requested in (None, AUTO_TEMPLATE):
        family = find_family_for_model_type(model_type)
        template = family.eval_template(processor) if family is not None else own
        if template:
            return template
        raise ValueError(
            f"No chat template for model type {model_type!r}: its processor has none; pass one of "
            f"{sorted(CHAT_TEMPLATES)} (or Jinja text)."
        )
    if requested == PROCESSOR_TEMPLATE:
        if not own:
            raise ValueError(f"The {model_type!r} processor has no chat template of its own.")
        return own
    if requested in CHAT_TEMPLATES:
        return CHAT_TEMPLATES[requested]
    if "{%" in requested or "{{" in requested:
        return requested
    raise ValueError(
        f"Unknown chat template {requested!r}: use 'auto', 'processor', one of {sorted(CHAT_TEMPLATES)} or Jinja text."
    )


def record_messages(record: EvalRecord) -> list[dict[str, Any]]:
    """The user turn of ``record`` as TRL messages; the image goes first unless the question places it."""
    parts = user_content_parts(record.prompt)
    placeholders = sum(part["type"] == "image" for part in parts)
    expected = 0 if record.image is None else 1
    if placeholders == 0 and expected:
        parts = [{"type": "image", "text": None}, *parts]
    elif placeholders != expected:
        raise RecordError(
            f"{record.source}: record {record.id!r}: {placeholders} '<image>' placeholder(s) but {expected} image(s)."
        )
    return [{"role": "user", "content": parts}]


@dataclass
class Generation:
    """One generated answer: its text, how many tokens it took, and whether it ran into ``max_new_tokens``."""

    text: str
    num_tokens: int
    hit_max_new_tokens: bool


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: set[int] = set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if configured is not None:
        ids.update([configured] if isinstance(configured, int) else configured)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    if not ids:
        raise ValueError("Neither the model's generation config nor its tokenizer defines an end-of-sequence token.")
    return sorted(ids)


class BatchGenerator:
    """Generate answers for :class:`~evl_kd_trainer.eval.records.EvalRecord` s in left-padded greedy batches.

    Args:
        model: a loaded VLM (``*ForConditionalGeneration``), already on its device.
        processor: its processor (the tokenizer is switched to left padding).
        chat_template: Jinja text (see :func:`resolve_chat_template`).
        max_new_tokens: generation budget per answer (PULSE's evaluation: 1024).
        batch_size: records per ``generate`` call.
        unreadable_images: ``"error"`` raises naming the record and image; ``"skip"`` leaves the record
            out (its output is ``None``) and lists it in the second return value.
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        chat_template: str,
        *,
        max_new_tokens: int = 1024,
        batch_size: int = 8,
        unreadable_images: str = "error",
    ) -> None:
        if max_new_tokens < 1 or batch_size < 1:
            raise ValueError(f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens}, {batch_size}.")
        if unreadable_images not in UNREADABLE_IMAGE_POLICIES:
            raise ValueError(
                f"unreadable_images must be one of {UNREADABLE_IMAGE_POLICIES}, got {unreadable_images!r}."
            )
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.chat_template = chat_template
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.unreadable_images = unreadable_images
        self.eos_ids = _eos_ids(model, self.tokenizer)
        config = copy.deepcopy(model.generation_config)
        config.update(
            do_sample=False,
            num_beams=1,
            temperature=None,
            top_p=None,
            top_k=None,
            max_new_tokens=max_new_tokens,
            eos_token_id=self.eos_ids,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        self.generation_config = config

    def render(self, record: EvalRecord) -> str:
        """The prompt text of ``record`` in the model's format, ending where the answer starts."""
        return self.processor.apply_chat_template(
            record_messages(record), chat_template=self.chat_template, add_generation_prompt=True, tokenize=False
        )

    def _to_device(self, inputs: Any) -> dict[str, Any]:
        device, dtype = self.model.device, self.model.dtype
        moved = {}
        for key, value in inputs.items():
            if isinstance(value, torch.Tensor):
                value = value.to(device, dtype=dtype) if value.is_floating_point() else value.to(device)
            moved[key] = value
        return moved

    def _decode(self, row: list[int]) -> Generation:
        stop = next((position for position, token in enumerate(row) if token in self.eos_ids), None)
        tokens = row if stop is None else row[:stop]
        text = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
        return Generation(
            text=text, num_tokens=len(tokens), hit_max_new_tokens=stop is None and len(row) >= self.max_new_tokens
        )

    @torch.inference_mode()
    def generate_batch(self, records: Sequence[EvalRecord]) -> list[Generation]:
        """Generate for records whose images are already checked (``record.image`` decoded or ``None``)."""
        texts = [self.render(record) for record in records]
        images = [record.image for record in records if record.image is not None]
        inputs = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt")
        inputs = self._to_device(inputs)
        output = self.model.generate(**inputs, generation_config=self.generation_config)
        new_tokens = output[:, inputs["input_ids"].shape[1] :].tolist()
        return [self._decode(row) for row in new_tokens]

    def __call__(
        self, records: Sequence[EvalRecord], desc: str | None = None, progress: bool = True
    ) -> tuple[list[Generation | None], list[tuple[str, str]]]:
        """Answers for ``records`` (``None`` where a record was skipped) and the skipped ``(id, reason)`` pairs."""
        from tqdm.auto import tqdm

        outputs: list[Generation | None] = [None] * len(records)
        skipped: list[tuple[str, str]] = []
        with tqdm(total=len(records), desc=desc, unit="sample", disable=not progress) as bar:
            for start in range(0, len(records), self.batch_size):
                batch = records[start : start + self.batch_size]
                ready: list[tuple[int, EvalRecord]] = []
                for offset, record in enumerate(batch):
                    decoded = self._load_image(record, skipped)
                    if decoded is not None:
                        ready.append((start + offset, decoded))
                if ready:
                    for (position, _), generation in zip(ready, self.generate_batch([r for _, r in ready])):
                        outputs[position] = generation
                bar.update(len(batch))
        return outputs, skipped

    def _load_image(self, record: EvalRecord, skipped: list[tuple[str, str]]) -> EvalRecord | None:
        """A copy of ``record`` with its image decoded (PIL, RGB), or ``None`` if it was skipped."""
        if record.image is None:
            return record
        try:
            image = load_image(record.image, record_id=record.id)
        except (ValueError, TypeError, OSError) as error:
            if self.unreadable_images == "error":
                raise RecordError(f"{record.source}: {error}") from error
            logger.warning("Skipping %s: %s", record.id, error)
            skipped.append((record.id, f"unreadable image: {error}"))
            return None
        return replace(record, image=image)
