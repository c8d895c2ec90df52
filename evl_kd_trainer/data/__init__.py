"""Data: chat templates, ECGInstruct loading and the dual-view collator."""

from evl_kd_trainer.data.collator import DualViewCollator
from evl_kd_trainer.data.ecginstruct import load_ecginstruct
from evl_kd_trainer.data.templates import CHAT_TEMPLATES, get_chat_template
from evl_kd_trainer.data.validation import InvalidRecordError, LoadReport

__all__ = [
    "CHAT_TEMPLATES",
    "DualViewCollator",
    "InvalidRecordError",
    "LoadReport",
    "get_chat_template",
    "load_ecginstruct",
]
