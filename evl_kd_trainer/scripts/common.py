"""Pieces the example scripts share: path checks before loading, dataset loading, PEFT config."""

from __future__ import annotations

import os
import re
from typing import Any

from evl_kd_trainer.models.pixels import apply_pixel_budget, has_pixel_budget  # noqa: F401  (re-exported)
from evl_kd_trainer.scripts.args import DataArguments

# "org/name" (a Hub id) as opposed to a local path
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _looks_like_hub_id(value: str) -> bool:
    return bool(_HUB_ID.match(value)) and not value.startswith((".", "/", "~"))


def check_model_path(value: str | None, key: str) -> None:
    """A model value must be a local folder, a cached Hub model, or (online) a Hub id the Hub confirms.

    ``checkpoints/qwen3vl-sft`` is both a relative path and a valid ``org/name`` id. It is looked up in the Hub
    cache; offline (``HF_HUB_OFFLINE=1``) or when its first component is a local folder, a miss is an error at once.
    Otherwise the Hub is asked once, with a short timeout (``EVL_KD_HUB_CHECK_TIMEOUT``, default 5 s): no such
    model, or no answer, is an error naming the key, instead of minutes of download retries after other models
    have loaded.
    """
    if value is None:
        raise ValueError(f"`{key}` is required (in the recipe or on the command line).")
    if os.path.exists(value):
        return
    where = f"no such model folder: {value} (relative to {os.getcwd()})"
    if not _looks_like_hub_id(value):
        raise FileNotFoundError(f"`{key}`: {where}")
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(value, "config.json"), str):
        return
    env = os.environ.get("HF_HUB_OFFLINE", "").upper()
    if constants.is_offline_mode() or env in {"1", "ON", "YES", "TRUE"}:
        raise FileNotFoundError(f"`{key}`: {where}, nor a cached Hub model (HF_HUB_OFFLINE is set)")
    first = value.split("/", 1)[0]
    if os.path.isdir(first):
        raise FileNotFoundError(f"`{key}`: {where} (the folder {first}/ exists, so this is a path, not a Hub id)")
    _ask_hub(value, key, where)


def _ask_hub(repo_id: str, key: str, where: str) -> None:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    timeout = float(os.environ.get("EVL_KD_HUB_CHECK_TIMEOUT", "5"))
    try:
        HfApi().model_info(repo_id, timeout=timeout)
    except GatedRepoError:
        return  # it exists; from_pretrained reports a missing token or licence itself
    except RepositoryNotFoundError as err:
        raise FileNotFoundError(f"`{key}`: {where}, nor a Hub model of that name") from err
    except HfHubHTTPError:
        return  # the Hub answered (a private repo, a server error): from_pretrained says what it needs
    except Exception as err:  # no answer: DNS, refused connection, timeout (httpx's errors are not OSErrors)
        raise FileNotFoundError(
            f"`{key}`: {where}, not a cached Hub model, and the Hub could not be reached in {timeout:g} s "
            f"({type(err).__name__}): fix the path, or download the model first"
        ) from err


def precheck_paths(namespace: Any, model_keys: tuple[str, ...], data: bool = True) -> None:
    """Path checks on the raw parsed values, before any config is built (see ``parse_recipe_args``)."""
    for key in model_keys:
        check_model_path(getattr(namespace, key, None), key)
    if data:
        check_data_paths(namespace)


def check_data_paths(data_args: DataArguments | Any) -> None:
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
