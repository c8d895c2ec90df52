"""Checkpoint conversion: original-LLaVA folders (PULSE-7B) into transformers LLaVA-NeXT folders.

``evl-kd convert-llava SRC DST`` (:mod:`evl_kd_trainer.convert.cli`) wraps
:func:`convert_llava_checkpoint`.
"""

from __future__ import annotations

from evl_kd_trainer.convert.checkpoint_io import ConversionError
from evl_kd_trainer.convert.llava import LlavaConversion, convert_llava_checkpoint, map_llava_key

__all__ = ["ConversionError", "LlavaConversion", "convert_llava_checkpoint", "map_llava_key"]
