"""Moved to :mod:`evl_kd_trainer.models.families.llava` (the LLaVA family); this module re-exports its adapters."""

from __future__ import annotations

from evl_kd_trainer.models.families.llava import LlavaAdapter, LlavaNextAdapter, image_token_runs

__all__ = ["LlavaAdapter", "LlavaNextAdapter", "image_token_runs"]
