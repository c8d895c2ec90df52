"""Load students and teachers from a folder or Hub name, picking the classes our pipeline needs.

The model family (:mod:`evl_kd_trainer.models.families`) decides; two cases need more than the Auto classes:

* LLaVA-NeXT checkpoints converted from PULSE with ``mm_patch_merge_type == "flat"`` must be loaded as
  :class:`evl_kd_trainer.models.llava_flat.LlavaNextFlatForConditionalGeneration` (flat packing of
  ``(1 + crops) * patches`` tokens, as PULSE was trained); the stock class would unpad and add
  newline tokens, i.e. silently change the teacher.
* Our own processors are unknown to ``AutoProcessor``, which then falls back to returning the bare
  tokenizer (or, for a flat LLaVA-NeXT folder, could pick the stock processor with the wrong token
  count); they are reloaded by the class name saved with them: each family's ``own_processor_classes`` (the
  image-only Qwen-VL processors, no torchvision; :class:`~evl_kd_trainer.models.llava_flat.LlavaNextFlatProcessor`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor, PretrainedConfig, PreTrainedModel

from evl_kd_trainer.models.registry import families, find_family


def model_class_for(config: PretrainedConfig) -> type[PreTrainedModel] | None:
    """The class :func:`load_model` uses for ``config`` (its family's), or ``None`` for the
    ``AutoModelForImageTextToText`` default."""
    family = find_family(config)
    return family.model_class(config) if family is not None else None


def load_model(path_or_name: str | os.PathLike[str], **kwargs: Any) -> PreTrainedModel:
    """Load a VLM; ``kwargs`` go to ``from_pretrained`` (``dtype``, ``attn_implementation``, ...)."""
    config = kwargs.pop("config", None) or AutoConfig.from_pretrained(path_or_name)
    cls = model_class_for(config) or AutoModelForImageTextToText
    return cls.from_pretrained(path_or_name, config=config, **kwargs)


def _own_processor_classes() -> dict[str, type]:
    """Our processor classes (every family's), by class name."""
    return {cls.__name__: cls for family in families() for cls in family.own_processor_classes()}


def _saved_processor_class(path: str | os.PathLike[str]) -> str | None:
    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        file = Path(path) / name
        if file.is_file():
            found = json.loads(file.read_text()).get("processor_class")
            if found:
                return found
    return None


def load_processor(path_or_name: str | os.PathLike[str], **kwargs: Any) -> Any:
    """Load the processor saved with a model: our own processors (the families' image-only Qwen-VL, flat
    LLaVA-NeXT, ...) by class, others by ``AutoProcessor``."""
    saved = _saved_processor_class(path_or_name) if Path(path_or_name).is_dir() else None
    own = _own_processor_classes()
    if saved in own:
        return own[saved].from_pretrained(path_or_name, **kwargs)
    return AutoProcessor.from_pretrained(path_or_name, **kwargs)
