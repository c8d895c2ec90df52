"""The teacher's view of a sample, rendered exactly as the training collator renders it, and its settings.

The cache is built with a :class:`~evl_kd_trainer.data.collator.DualViewCollator` configured as in training (both
processors, the run's templates, ``teacher_max_length``, truncation and special-text handling) that renders only
its teacher view. Both processors are given because the record text is escaped with the special-token strings of
*both* tokenizers before either view is tokenized: a teacher view rendered alone could read a student control token
in a record's text differently from the run. Samples the teacher view cuts or drops are cut or dropped here too.
"""

from __future__ import annotations

import json
from typing import Any

from evl_kd_trainer.data.collator import DualViewCollator
from evl_kd_trainer.data.lengths import context_length

TEACHER_VIEW = "teacher"


def teacher_view_collator(
    teacher_processor: Any,
    teacher_config: Any,
    args: Any,
    student_processor: Any | None = None,
    *,
    truncation: str = "after_image",
    on_bad_image: str = "skip",
    special_token_text: str = "escape",
) -> DualViewCollator:
    """A collator giving the ``teacher_``-prefixed teacher view of the run ``args`` (an ``EVLDistillConfig``) and
    each batch's ``record_ids``; ``teacher_config`` bounds ``teacher_max_length`` when the run leaves it unset."""
    teacher_max_length = args.teacher_max_length
    if teacher_max_length is None:  # as the trainer resolves it: the teacher's own context
        teacher_max_length = context_length(teacher_config)
    collator = DualViewCollator(
        student_processor if student_processor is not None else teacher_processor,
        teacher_processor=teacher_processor,
        max_length=None,
        teacher_max_length=teacher_max_length,
        truncation=truncation,
        chat_template=args.student_chat_template if student_processor is not None else args.teacher_chat_template,
        teacher_chat_template=args.teacher_chat_template,
        on_bad_image=on_bad_image,
        special_token_text=special_token_text,
        return_record_ids=True,
    )
    # Render the teacher view only; the escaper was built above from both processors, as in training.
    collator.views = [view for view in collator.views if view.name == TEACHER_VIEW]
    return collator


def teacher_view_settings(collator: DualViewCollator) -> dict[str, Any]:
    """What of the collator decides the teacher's tokens: template, length limit, truncation, text escaping."""
    from evl_kd_trainer.cache.fingerprint import text_fingerprint

    (view,) = [view for view in collator.views if view.name == TEACHER_VIEW]
    # The strings the collator's escaper actually uses (built from both processors, see teacher_view_collator).
    escaped = list(collator._escaper.strings)
    return {
        "chat_template": text_fingerprint(view.chat_template),
        "teacher_max_length": view.max_length,
        "truncation": collator.truncation,
        "special_token_text": collator.special_token_text,
        "special_token_strings": text_fingerprint(json.dumps(escaped)),
    }
