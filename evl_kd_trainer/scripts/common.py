"""Pieces the example scripts share: path checks before loading, dataset loading, PEFT config."""

from __future__ import annotations

import os
import re
from typing import Any

from evl_kd_trainer.scripts.args import DataArguments

# "org/name" (a Hub id) as opposed to a local path
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def check_model_path(value: str | None, key: str) -> None:
    """A local folder must exist; an ``org/name`` value that is no local folder must be a Hub id.

    Online, a Hub id is left to ``from_pretrained``. Offline (``HF_HUB_OFFLINE=1``) it must be in the Hub cache, so
    that a mistyped relative path such as ``checkpoints/qwen3vl-sft`` is reported here, not after other models load.
    """
    if value is None:
        raise ValueError(f"`{key}` is required (in the recipe or on the command line).")
    if os.path.exists(value):
        return
    if _HUB_ID.match(value) and not value.startswith((".", "/")):
        from huggingface_hub import constants, try_to_load_from_cache

        env = os.environ.get("HF_HUB_OFFLINE", "").upper()
        offline = constants.is_offline_mode() or env in {"1", "ON", "YES", "TRUE"}
        if not offline or isinstance(try_to_load_from_cache(value, "config.json"), str):
            return
        raise FileNotFoundError(
            f"`{key}`: no such model folder: {value} (nor a cached Hub model: HF_HUB_OFFLINE is set)"
        )
    raise FileNotFoundError(f"`{key}`: no such model folder: {value}")


def check_data_paths(data_args: DataArguments) -> None:
    if data_args.dataset_path is None:
        raise ValueError("`dataset_path` is required (in the recipe or on the command line).")
    for key in ("dataset_path", "eval_dataset_path", "image_root"):
        value = getattr(data_args, key)
        if value is not None and not os.path.exists(value):
            raise FileNotFoundError(f"`{key}`: no such file or folder: {value}")


def load_datasets(data_args: DataArguments) -> tuple[Any, Any]:
    from evl_kd_trainer.data.ecginstruct import load_ecginstruct

    def _load(path: str) -> Any:
        return load_ecginstruct(
            path,
            image_root=data_args.image_root,
            streaming=data_args.streaming,
            skip_invalid=data_args.skip_invalid,
            check_images=data_args.check_images,
            allow_paths_outside_root=data_args.allow_paths_outside_root,
        )

    train = _load(data_args.dataset_path)
    if data_args.max_train_samples is not None:
        train = (
            train.take(data_args.max_train_samples)
            if data_args.streaming
            else train.select(range(min(data_args.max_train_samples, len(train))))
        )
    evaluation = _load(data_args.eval_dataset_path) if data_args.eval_dataset_path else None
    return train, evaluation


def collator_options(data_args: DataArguments) -> dict[str, Any]:
    """The `DualViewCollator` arguments the data arguments set."""
    return {"on_bad_image": data_args.on_bad_image, "special_token_text": data_args.special_token_text}


def configure_collator(collator: Any, data_args: DataArguments) -> None:
    """Apply the data arguments' bad-data options to the collator a trainer built itself (a `DualViewCollator`)."""
    from evl_kd_trainer.data.collator import DualViewCollator

    if isinstance(collator, DualViewCollator):
        for name, value in collator_options(data_args).items():
            setattr(collator, name, value)


def model_init_kwargs(model_args: Any) -> dict[str, Any]:
    """`from_pretrained` keyword arguments from TRL's `ModelConfig`."""
    kwargs: dict[str, Any] = {}
    if getattr(model_args, "dtype", None) not in (None, "auto"):
        kwargs["dtype"] = model_args.dtype
    if getattr(model_args, "model_revision", None) not in (None, "main"):
        kwargs["revision"] = model_args.model_revision
    if getattr(model_args, "attn_implementation", None):
        kwargs["attn_implementation"] = model_args.attn_implementation
    return kwargs


def has_pixel_budget(processor: Any) -> bool:
    """Whether the processor's image processor sizes images by area (Qwen-VL's ``shortest/longest_edge``)."""
    size = getattr(getattr(processor, "image_processor", None), "size", None) or {}
    return "shortest_edge" in size and "longest_edge" in size


def apply_pixel_budget(processor: Any, data_args: Any, only_where_supported: bool = False) -> Any:
    """Set Qwen-VL's min/max pixels (the paper's 784/50176) on a processor whose image processor has them.

    A processor without a pixel budget (LLaVA's fixed crops) is an error, unless ``only_where_supported``: then it
    is returned unchanged (an evaluation of a Qwen-VL student beside a LLaVA teacher applies the budget to the
    student alone).
    """
    if data_args.min_pixels is None and data_args.max_pixels is None:
        return processor
    image_processor = getattr(processor, "image_processor", None)
    size = dict(getattr(image_processor, "size", None) or {})
    if not has_pixel_budget(processor):
        if only_where_supported:
            return processor
        raise ValueError(
            f"`min_pixels`/`max_pixels` apply to Qwen-VL image processors; {type(image_processor).__name__} has no "
            "pixel budget."
        )
    if data_args.min_pixels is not None:
        size["shortest_edge"] = data_args.min_pixels
    if data_args.max_pixels is not None:
        size["longest_edge"] = data_args.max_pixels
    image_processor.size = size
    return processor
