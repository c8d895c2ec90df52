"""Load students and teachers from a folder or Hub name, picking the classes our pipeline needs.

Two cases need more than the Auto classes:

* LLaVA-NeXT checkpoints converted from PULSE with ``mm_patch_merge_type == "flat"`` must be loaded as
  :class:`evl_kd_trainer.models.llava_flat.LlavaNextFlatForConditionalGeneration` (flat packing of
  ``(1 + crops) * patches`` tokens, as PULSE was trained); the stock class would unpad and add
  newline tokens, i.e. silently change the teacher.
* Our own processors are unknown to ``AutoProcessor``, which then falls back to returning the bare
  tokenizer (or, for a flat LLaVA-NeXT folder, could pick the stock processor with the wrong token
  count); they are reloaded by the class name saved with them: the image-only Qwen-VL processors (no
  torchvision) and :class:`~evl_kd_trainer.models.llava_flat.LlavaNextFlatProcessor`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor, PretrainedConfig, PreTrainedModel


def _is_flat_llava_next(config: PretrainedConfig) -> bool:
    return config.model_type == "llava_next" and getattr(config, "mm_patch_merge_type", None) == "flat"


def model_class_for(config: PretrainedConfig) -> type[PreTrainedModel] | None:
    """The class :func:`load_model` uses for ``config``, or ``None`` for the ``AutoModelForImageTextToText`` default."""
    if _is_flat_llava_next(config):
        try:
            from evl_kd_trainer.models.llava_flat import LlavaNextFlatForConditionalGeneration
        except ImportError as err:  # the flat class lives in its own module; refuse rather than change the teacher
            raise ImportError(
                "This LLaVA-NeXT checkpoint uses mm_patch_merge_type='flat' (PULSE); loading it needs "
                "evl_kd_trainer.models.llava_flat.LlavaNextFlatForConditionalGeneration, which is not importable."
            ) from err
        return LlavaNextFlatForConditionalGeneration
    return None


def load_model(path_or_name: str | os.PathLike[str], **kwargs: Any) -> PreTrainedModel:
    """Load a VLM; ``kwargs`` go to ``from_pretrained`` (``dtype``, ``attn_implementation``, ...)."""
    config = kwargs.pop("config", None) or AutoConfig.from_pretrained(path_or_name)
    cls = model_class_for(config) or AutoModelForImageTextToText
    return cls.from_pretrained(path_or_name, config=config, **kwargs)


def _own_processor_classes() -> dict[str, type]:
    from evl_kd_trainer.models.llava_flat import LlavaNextFlatProcessor
    from evl_kd_trainer.testing.qwen import (
        Qwen2_5_VLImageOnlyProcessor,
        Qwen2VLImageOnlyProcessor,
        Qwen3VLImageOnlyProcessor,
    )

    classes = (
        Qwen3VLImageOnlyProcessor,
        Qwen2_5_VLImageOnlyProcessor,
        Qwen2VLImageOnlyProcessor,
        LlavaNextFlatProcessor,
    )
    return {cls.__name__: cls for cls in classes}


def _saved_processor_class(path: str | os.PathLike[str]) -> str | None:
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        file = Path(path) / name
        if file.is_file():
            found = json.loads(file.read_text()).get("processor_class")
            if found:
                return found
    return None


def load_processor(path_or_name: str | os.PathLike[str], **kwargs: Any) -> Any:
    """Load the processor saved with a model: our own processors (image-only Qwen-VL, flat LLaVA-NeXT) by
    class, others by ``AutoProcessor``."""
    saved = _saved_processor_class(path_or_name) if Path(path_or_name).is_dir() else None
    own = _own_processor_classes()
    if saved in own:
        return own[saved].from_pretrained(path_or_name, **kwargs)
    return AutoProcessor.from_pretrained(path_or_name, **kwargs)
