"""The fingerprint of a run's teacher side, computed the same way when a cache is built and when a run checks it.

:func:`run_fingerprint` needs the teacher's files (or the in-memory model), its processor and the run's config,
not the teacher's weights in memory: a training run that reads a cache can check it without loading the teacher.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from torch import nn

from evl_kd_trainer.cache.fingerprint import (
    CACHE_FORMAT,
    config_fingerprint,
    dtype_name,
    processor_fingerprint,
    weights_fingerprint,
)
from evl_kd_trainer.cache.request import features_for
from evl_kd_trainer.cache.view import teacher_view_collator, teacher_view_settings

_SECRET_KEYS = ("token", "use_auth_token")


def teacher_init_kwargs(args: Any) -> dict[str, Any]:
    """``teacher_model_init_kwargs`` of the run as a dict (a recipe may give it as JSON text)."""
    kwargs = args.teacher_model_init_kwargs or {}
    return json.loads(kwargs) if isinstance(kwargs, str) else dict(kwargs)


def teacher_dtype_of(teacher: str | os.PathLike[str] | nn.Module, config: Any, init_kwargs: dict[str, Any]) -> str:
    """The dtype the teacher runs in: a model's own, or what ``from_pretrained`` resolves (``dtype="auto"``: the
    config's ``dtype``)."""
    if isinstance(teacher, nn.Module):
        return dtype_name(next(p.dtype for p in teacher.parameters() if p.is_floating_point()))
    dtype = init_kwargs.get("dtype", init_kwargs.get("torch_dtype", "auto"))
    if dtype == "auto":
        dtype = getattr(config, "dtype", None) or torch.get_default_dtype()
    return dtype_name(getattr(torch, dtype) if isinstance(dtype, str) else dtype)


def run_fingerprint(
    args: Any,
    teacher: str | os.PathLike[str] | nn.Module,
    teacher_processor: Any,
    student_processor: Any | None = None,
    *,
    teacher_config: Any = None,
    truncation: str = "after_image",
    special_token_text: str = "escape",
    logits_topk: int = 0,
) -> dict[str, Any]:
    """The fingerprint fields fixed by a run (``args``: an ``EVLDistillConfig``) and its teacher.

    ``teacher``: the teacher's folder (what ``teacher_model_name_or_path`` names) or the model itself;
    ``student_processor``: the run's student processor (its special-token strings are escaped in the teacher view
    too); ``truncation`` / ``special_token_text``: the collator's settings (``DataArguments.special_token_text``).
    The ``features`` field is what ``args.kd_method`` reads (:func:`~evl_kd_trainer.cache.request.features_for`).
    """
    from evl_kd_trainer import __version__

    if teacher_config is None:
        if isinstance(teacher, nn.Module):
            teacher_config = teacher.config
        else:
            from transformers import AutoConfig

            teacher_config = AutoConfig.from_pretrained(teacher)
    init_kwargs = teacher_init_kwargs(args) if not isinstance(teacher, nn.Module) else {}
    load_options = {k: v for k, v in init_kwargs.items() if k not in ("dtype", "torch_dtype", *_SECRET_KEYS)}
    processor_hash, tokenizer_hash = processor_fingerprint(teacher_processor)
    collator = teacher_view_collator(
        teacher_processor, teacher_config, args, student_processor, truncation=truncation,
        special_token_text=special_token_text,
    )  # fmt: skip
    return {
        "format": CACHE_FORMAT,
        "package_version": __version__,
        "teacher_weights": weights_fingerprint(teacher),
        "teacher_config": config_fingerprint(teacher_config),
        "teacher_dtype": teacher_dtype_of(teacher, teacher_config, init_kwargs),
        "teacher_load_options": load_options,
        "teacher_processor": processor_hash,
        "teacher_tokenizer": tokenizer_hash,
        **teacher_view_settings(collator),
        "features": features_for(args.kd_method, args, logits_topk=logits_topk).to_dict(),
    }
