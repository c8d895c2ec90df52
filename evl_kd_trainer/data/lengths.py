"""Default token limits of the collator's views: each model's own context (``max_position_embeddings``).

An unbounded view lets one 100k-character answer make the teacher's attention allocate tens of GB in the middle
of training; bounded by the model's context, such a sample is cut after its image or dropped by the collator (and
counted in its ``stats``) before any forward runs.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)


def context_length(model: Any) -> int | None:
    """``max_position_embeddings`` of the text config of ``model`` (a model or a config); ``None`` if it has none."""
    config = getattr(model, "config", model)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    value = getattr(text_config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _resolve(name: str, value: int | None, model: Any, key: str) -> int | None:
    context = context_length(model)
    if value is None:
        if context is None:
            logger.warning("The %s has no max_position_embeddings: `%s` stays unbounded.", name, key)
        else:
            logger.info("`%s` defaults to the %s's context, %d tokens.", key, name, context)
        return context
    if context is not None and value > context:
        logger.warning(
            "`%s`=%d exceeds the %s's context (max_position_embeddings=%d): longer views run past the positions "
            "the model was trained on.",
            key, value, name, context,
        )  # fmt: skip
    return value


def resolve_max_lengths(
    max_length: int | None, teacher_max_length: int | None, student: Any, teacher: Any = None
) -> tuple[int | None, int | None]:
    """The student and teacher view limits: the values given, or each model's context where ``None``.

    ``teacher=None`` (no teacher view) leaves ``teacher_max_length`` as it is.
    """
    student_limit = _resolve("student", max_length, student, "max_length")
    teacher_limit = (
        _resolve("teacher", teacher_max_length, teacher, "teacher_max_length")
        if teacher is not None
        else teacher_max_length
    )
    return student_limit, teacher_limit
