"""Checkpoint conversion: original-LLaVA folders (PULSE-7B) into transformers LLaVA-NeXT folders.

``evl-kd convert-llava SRC DST`` (:mod:`evl_kd_trainer.convert.cli`) wraps
:func:`convert_llava_checkpoint`. The names below are imported on first use, so that ``convert-llava --help``
does not import torch.
"""

from __future__ import annotations

from evl_kd_trainer.lazy import lazy_getattr

_LAZY_EXPORTS = {
    "ConversionError": "evl_kd_trainer.convert.checkpoint_io",
    "LlavaConversion": "evl_kd_trainer.convert.llava",
    "convert_llava_checkpoint": "evl_kd_trainer.convert.llava",
    "map_llava_key": "evl_kd_trainer.convert.llava",
}

__all__ = list(_LAZY_EXPORTS)


__getattr__ = lazy_getattr(__name__, _LAZY_EXPORTS)
