"""evl_kd_trainer: knowledge distillation between heterogeneous vision-language models, on top of TRL.

Heavy submodules (the trainer, model adapters, data pipeline) are imported lazily so that
``import evl_kd_trainer`` stays cheap and the pure loss functions can be used without TRL.
"""

from __future__ import annotations

from evl_kd_trainer.lazy import lazy_getattr

__version__ = "0.1.0.dev0"

# public name -> submodule that defines it
_LAZY_EXPORTS: dict[str, str] = {
    "EVLDistillConfig": "evl_kd_trainer.trainer.config",
    "EVLDistillTrainer": "evl_kd_trainer.trainer.trainer",
    "CrossAttentionAligner": "evl_kd_trainer.aligners",
    "VisualProjector": "evl_kd_trainer.aligners",
    "DualViewCollator": "evl_kd_trainer.data.collator",
    "load_ecginstruct": "evl_kd_trainer.data.ecginstruct",
    "get_adapter": "evl_kd_trainer.models",
}

__all__ = ["__version__", *_LAZY_EXPORTS]


__getattr__ = lazy_getattr(__name__, _LAZY_EXPORTS)
