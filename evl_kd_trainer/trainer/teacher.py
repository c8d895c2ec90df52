"""The teacher: which one, loaded how, checked against its processor, and placed the way TRL places teachers."""

from __future__ import annotations

import json
import os
from typing import Any

from torch import nn
from transformers.utils import logging

from evl_kd_trainer.models.registry import find_family

logger = logging.get_logger(__name__)


def teacher_path_of(teacher_model: Any) -> str | None:
    """The path / Hub id a teacher was given as, or the one its config was loaded from."""
    if teacher_model is None:
        return None
    return teacher_model if isinstance(teacher_model, str) else getattr(teacher_model.config, "_name_or_path", "")


def default_processor(path: str | None, role: str) -> Any:
    """The processor saved with ``role``'s model at ``path``; an error naming the argument when there is none."""
    from evl_kd_trainer.models import load_processor

    if not path or not os.path.exists(path) and "/" not in path:
        raise ValueError(
            f"No {role} processor was given and the {role} model has no saved path to load one from: pass "
            f"`{'processing_class' if role == 'student' else 'teacher_processing_class'}=`."
        )
    return load_processor(path)


def load_teacher(args: Any, teacher_model: Any, processor: Any) -> tuple[nn.Module, Any, Any]:
    """The frozen teacher (eval mode, no gradients), its processor and its model adapter, loaded from a path when
    given one. An unsupported architecture fails first, listing the supported ones."""
    from evl_kd_trainer.models import get_adapter, load_model

    path = teacher_path_of(teacher_model)
    if isinstance(teacher_model, str):
        init_kwargs = args.teacher_model_init_kwargs or {}
        if isinstance(init_kwargs, str):
            init_kwargs = json.loads(init_kwargs)
        teacher_model = load_model(teacher_model, **init_kwargs)
    adapter = get_adapter(teacher_model)
    if processor is None:
        processor = default_processor(path, "teacher")
    check_processor_matches(teacher_model, processor, "teacher")
    teacher_model.requires_grad_(False)
    teacher_model.eval()
    return teacher_model, processor, adapter


def resolve_teacher(
    args: Any, request: Any, active: bool, teacher_model: Any, teacher_processor: Any, student_processor: Any
) -> tuple[nn.Module | None, Any, Any, Any]:
    """Where the run's teacher features come from: ``(teacher, teacher_processor, teacher_adapter, cache)``.

    An inactive method (``alpha = 0``, every weight 0, ``kd_method="sft"``) is plain SFT: no teacher is loaded or
    placed and the batches carry no teacher view (all ``None``). With ``teacher_cache_dir`` the cache is opened and
    its fingerprint checked (a :class:`~evl_kd_trainer.trainer.teacher_cache.CachedTeacher`) and no teacher loads.
    """
    from evl_kd_trainer.trainer.teacher_cache import CachedTeacher

    if not request.teacher:
        if args.teacher_cache_dir is not None:
            raise ValueError(f"teacher_cache_dir is set but kd_method={args.kd_method!r} reads no teacher.")
        return None, teacher_processor, None, None
    if teacher_model is None and args.teacher_cache_dir is None:
        raise ValueError(
            f"kd_method={args.kd_method!r} needs a teacher: pass `teacher_model=` or set "
            "`teacher_model_name_or_path` in the config."
        )
    if not active:
        logger.info(f"kd_method={args.kd_method!r} carries no weight under these settings: plain SFT, no teacher.")
        return None, teacher_processor, None, None
    if args.teacher_cache_dir is not None:
        cache = CachedTeacher(args, teacher_model, student_processor, teacher_processor)
        return None, cache.teacher_processor, cache.adapter, cache
    teacher, teacher_processor, adapter = load_teacher(args, teacher_model, teacher_processor)
    return teacher, teacher_processor, adapter, None


def prepare_teacher(trainer: Any, teacher: nn.Module) -> nn.Module:
    """Place the teacher the way TRL's distillation trainers do: ZeRO-3 kept, other stages inference-only."""
    if trainer.is_deepspeed_enabled:
        from trl.models.utils import prepare_deepspeed

        return prepare_deepspeed(teacher, trainer.accelerator)
    if trainer.is_fsdp_enabled:
        from trl.models.utils import prepare_fsdp

        return prepare_fsdp(teacher, trainer.accelerator)
    return trainer.accelerator.prepare_model(teacher, evaluation_mode=True)


def check_processor_matches(model: nn.Module, processor: Any, role: str) -> None:
    """Fail early when a processor was built for another model (vocabulary or image token mismatch)."""
    tokenizer = getattr(processor, "tokenizer", processor)
    config = model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    vocab_size = getattr(text_config, "vocab_size", None)
    if vocab_size is not None and len(tokenizer) > vocab_size:
        raise ValueError(
            f"The {role} processor's tokenizer has {len(tokenizer)} tokens but the {role} model's vocabulary has "
            f"{vocab_size}: the processor does not belong to this model ({type(model).__name__})."
        )
    family = find_family(model)
    if family is not None:  # the family's own refusals (e.g. PULSE's flat LLaVA-NeXT in the stock classes)
        family.check_processor(model, processor, role)
    image_token_id = getattr(config, "image_token_id", None)
    if image_token_id is None:
        image_token_id = getattr(config, "image_token_index", None)
    image_token = getattr(processor, "image_token", None)
    if image_token_id is not None and image_token is not None:
        processor_id = tokenizer.convert_tokens_to_ids(image_token)
        if processor_id != image_token_id:
            raise ValueError(
                f"The {role} processor maps its image token {image_token!r} to id {processor_id}, but the {role} "
                f"model expects image token id {image_token_id}: the processor does not belong to this model."
            )
