"""Data: chat templates, ECGInstruct loading and the dual-view collator."""

from evl_kd_trainer.data.collator import DualViewCollator
from evl_kd_trainer.data.ecginstruct import load_ecginstruct
from evl_kd_trainer.data.images import BadImageError, ImageLimits
from evl_kd_trainer.data.templates import CHAT_TEMPLATES, get_chat_template
from evl_kd_trainer.data.validation import InvalidRecordError, LoadReport

__all__ = [
    "BadImageError",
    "CHAT_TEMPLATES",
    "DualViewCollator",
    "ImageLimits",
    "InvalidRecordError",
    "LoadReport",
    "get_chat_template",
    "load_ecginstruct",
]
