"""Per-architecture model adapters: where a VLM keeps what distillation reads.

An adapter answers, for one ``config.model_type``: which module is the language model (the decoder
stack that receives the visual tokens), which token id marks image positions in ``input_ids``, how
many visual tokens each image became, which inputs the model accepts, its widths, and its LM head.
Feature capture (:mod:`evl_kd_trainer.models.capture`) is written once against this interface. Adapters belong
to model families (:mod:`evl_kd_trainer.models.families`, one file per family), which :func:`get_adapter` consults.

Visual tokens are read where the language model receives them (its ``inputs_embeds`` at image-token
positions) rather than at a projector's output: that is exactly what the LM consumes whatever the
packing (Qwen merger, LLaVA-NeXT unpad+newline, PULSE's flat packing), so one mechanism serves every
architecture, and the per-architecture part reduces to splitting the tokens per image.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import PretrainedConfig

from evl_kd_trainer.dims import ModelDims
from evl_kd_trainer.lazy import lazy_getattr
from evl_kd_trainer.registry import Registry

#: Adapters registered directly for model types no family covers (the built-in adapters belong to families).
ADAPTER_REGISTRY = Registry("model adapter")

# `get_adapter` and `supported_model_types` consult the family registry, which imports this module: re-exported
# lazily (on first use) so that the old import path `evl_kd_trainer.models.base` works without an import circle.
__getattr__ = lazy_getattr(
    __name__,
    {"get_adapter": "evl_kd_trainer.models.registry", "supported_model_types": "evl_kd_trainer.models.registry"},
)


def register_adapter(*model_types: str):
    """Class decorator registering a :class:`ModelAdapter` subclass for one or more ``config.model_type``s that no
    model family covers (a family, :mod:`evl_kd_trainer.models.family`, is the complete way to add a model)."""

    def decorator(cls: type[ModelAdapter]) -> type[ModelAdapter]:
        for model_type in model_types:
            ADAPTER_REGISTRY.register(model_type)(cls)
        return cls

    return decorator


def unwrap_model(model: nn.Module) -> nn.Module:
    """The underlying Hugging Face model of a wrapped one.

    Peels PEFT (``get_base_model()``), DDP / DeepSpeed engines / accelerate wrappers (``.module``) and
    ``torch.compile`` (``._orig_mod``) until a module with a ``config`` remains. Hooks registered on
    the result's submodules fire whichever wrapper is called, since wrappers call into the same modules.
    """
    seen: set[int] = set()
    while id(model) not in seen:
        seen.add(id(model))
        if hasattr(model, "get_base_model") and callable(model.get_base_model):
            model = model.get_base_model()
        elif isinstance(getattr(model, "module", None), nn.Module):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            break
    return model


class ModelAdapter:
    """What distillation needs to know about one VLM architecture, bound to a model's config.

    The defaults fit transformers' ``*ForConditionalGeneration`` layout shared by Qwen-VL and LLaVA:
    ``model.model`` (multimodal base without LM head) -> ``.language_model`` (decoder stack with
    ``.layers`` and a final ``.norm``), and ``model.lm_head``.
    """

    #: Keys of a processed batch that the model's forward accepts (others, e.g. labels, are dropped). Feature capture
    #: records these from the multimodal base model's call, so they must include what :meth:`image_token_counts` and
    #: :meth:`num_images` read (e.g. ``image_grid_thw``, ``image_sizes``).
    input_keys: ClassVar[tuple[str, ...]] = ("input_ids", "attention_mask", "pixel_values")

    def __init__(self, config: PretrainedConfig) -> None:
        self.config = config

    # --- ids and widths -------------------------------------------------------------------------
    @property
    def text_config(self) -> PretrainedConfig:
        return getattr(self.config, "text_config", None) or self.config

    @property
    def image_token_id(self) -> int:
        """Id of the placeholder token that the model replaces by visual tokens."""
        config = self.config
        token_id = getattr(config, "image_token_id", None)
        return int(token_id if token_id is not None else config.image_token_index)

    def image_token_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Boolean ``(B, L)`` mask of the positions that carry visual tokens."""
        return input_ids == self.image_token_id

    @property
    def dims(self) -> ModelDims:
        """Widths: ``visual_width`` is the LM width, since visual tokens are read as the LM receives them."""
        hidden = int(self.text_config.hidden_size)
        return ModelDims(hidden_size=hidden, visual_width=hidden, vocab_size=int(self.text_config.vocab_size))

    @property
    def num_layers(self) -> int:
        return int(self.text_config.num_hidden_layers)

    # --- modules --------------------------------------------------------------------------------
    def base_model(self, model: nn.Module) -> nn.Module:
        """The multimodal model without LM head (``model.model``): calling it never computes logits."""
        return unwrap_model(model).model

    def language_model(self, model: nn.Module) -> nn.Module:
        """The decoder stack that receives text and visual token embeddings."""
        return self.base_model(model).language_model

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        return self.language_model(model).layers

    def get_lm_head(self, model: nn.Module) -> nn.Module:
        """The LM head (hidden -> vocab), for logit-based methods that project features themselves."""
        return unwrap_model(model).get_output_embeddings()

    def filter_inputs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """The entries of a batch this model accepts (drops labels and the other model's keys)."""
        return {key: value for key, value in inputs.items() if key in self.input_keys and value is not None}

    # --- visual tokens per image ------------------------------------------------------------------
    def image_token_counts(self, inputs: Mapping[str, Any]) -> list[int]:
        """Number of visual tokens of each image of the batch, in order (row-major over ``input_ids``).

        ``inputs`` holds the model's forward arguments (``input_ids`` and the image tensors).
        """
        raise NotImplementedError

    def num_images(self, inputs: Mapping[str, Any]) -> int:
        """Number of images in the batch."""
        raise NotImplementedError
