"""Moved to :mod:`evl_kd_trainer.models.families.qwen_vl` (the Qwen-VL family); this module re-exports its adapter."""

from __future__ import annotations

from evl_kd_trainer.models.families.qwen_vl import QwenVLAdapter

__all__ = ["QwenVLAdapter"]
