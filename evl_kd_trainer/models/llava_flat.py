"""LLaVA-NeXT with original LLaVA's ``flat`` patch merging, the packing PULSE-7B was trained with.

Original LLaVA (``llava_arch.prepare_inputs_labels_for_multimodal``) encodes an anyres image as a base
crop (the whole image resized to one crop) followed by the grid crops in raster order; with
``mm_patch_merge_type == "flat"`` (its default) the per-crop features are simply concatenated:
``(1 + crops) * patches`` tokens (576 per 336-px crop for CLIP ViT-L/14), no unpadding, no newline
token. transformers' LLaVA-NeXT hard-codes ``spatial_unpad`` (unpad + one newline token per feature
row), so loading PULSE with the stock class would feed the language model a different visual
sequence than it was trained on.

Only the two things that differ are overridden, the rest (vision tower, feature layer and CLS
handling, projector, placeholder scatter, anyres preprocessing) is transformers' own:

* :class:`LlavaNextFlatModel` / :class:`LlavaNextFlatForConditionalGeneration`: feature packing, and no
  ``image_newline`` parameter (flat LLaVA has none; keeping a random one would only add a spurious
  weight to checkpoints);
* :class:`LlavaNextFlatProcessor`: the number of ``<image>`` tokens each image expands to.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from transformers import (
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextModel,
    LlavaNextPreTrainedModel,
    LlavaNextProcessor,
    PreTrainedModel,
)
from transformers.image_processing_utils import select_best_resolution

FLAT_MERGE_TYPE = "flat"


def flat_num_crops(image_size: Sequence[int], grid_pinpoints: Sequence[Sequence[int]], crop_size: Sequence[int]) -> int:
    """Crops LLaVA's anyres preprocessing makes of an image: 1 base crop + the best resolution's grid.

    ``image_size``, ``crop_size`` and every pinpoint are ``(height, width)`` (transformers' order; the
    converter swaps original LLaVA's ``(width, height)`` pinpoints). The grid is ``ceil``-divided, as
    the image processor's patch loop and the model's ``image_size_to_num_patches`` count it.
    """
    best_height, best_width = select_best_resolution([int(s) for s in image_size], [list(p) for p in grid_pinpoints])
    crop_height, crop_width = (int(s) for s in crop_size)
    return 1 + math.ceil(best_height / crop_height) * math.ceil(best_width / crop_width)


def _check_flat(config: LlavaNextConfig) -> None:
    merge = getattr(config, "mm_patch_merge_type", FLAT_MERGE_TYPE)
    if merge != FLAT_MERGE_TYPE:
        raise ValueError(
            f"LlavaNextFlat* needs config.mm_patch_merge_type == 'flat', got {merge!r}; "
            "use transformers' LlavaNextForConditionalGeneration for 'spatial_unpad'."
        )
    # Recorded so that a saved flat model is reloaded as flat (load_model dispatches on this field).
    config.mm_patch_merge_type = FLAT_MERGE_TYPE


class _FlatInitMixin:
    """Weight init that skips the ``image_newline`` the flat models do not have."""

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, LlavaNextModel) and module.image_newline is None:
            PreTrainedModel._init_weights(self, module)  # the generic part of LlavaNextPreTrainedModel's init
            return
        super()._init_weights(module)  # type: ignore[misc]


class LlavaNextFlatModel(_FlatInitMixin, LlavaNextModel):
    """``LlavaNextModel`` packing each image as ``crops * tokens_per_crop`` rows: base crop first, then
    the grid crops in raster order, each crop's tokens in the vision tower's order."""

    _keys_to_ignore_on_load_unexpected = [r"(^|\.)image_newline$"]

    def __init__(self, config: LlavaNextConfig) -> None:
        _check_flat(config)
        super().__init__(config)
        # Assigning None to a registered parameter removes it from parameters() and the state dict.
        self.image_newline = None

    def pack_image_features(
        self,
        image_features: Sequence[torch.Tensor],
        image_sizes: torch.Tensor,
        vision_feature_select_strategy: str,
        image_newline: torch.Tensor | None = None,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Flatten each image's ``(crops, tokens, dim)`` features to ``(crops * tokens, dim)``.

        ``image_sizes``, the strategy and ``image_newline`` are unused: flat packing depends on neither
        the original size (no unpadding) nor a newline embedding. Returns the per-image features and
        their lengths, as the stock method does.
        """
        packed = [feature.reshape(-1, feature.shape[-1]) for feature in image_features]
        device = packed[0].device if packed else None
        lengths = torch.tensor([p.shape[0] for p in packed], dtype=torch.long, device=device)
        return packed, lengths


class LlavaNextFlatForConditionalGeneration(_FlatInitMixin, LlavaNextForConditionalGeneration):
    """``LlavaNextForConditionalGeneration`` on :class:`LlavaNextFlatModel` (PULSE-7B's packing)."""

    _keys_to_ignore_on_load_unexpected = [r"(^|\.)image_newline$"]

    def __init__(self, config: LlavaNextConfig) -> None:
        _check_flat(config)
        # The parent's __init__ would first build (and allocate) a stock LlavaNextModel; build ours directly.
        LlavaNextPreTrainedModel.__init__(self, config)
        self.model = LlavaNextFlatModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()


class LlavaNextFlatProcessor(LlavaNextProcessor):
    """``LlavaNextProcessor`` expanding ``<image>`` to the flat token count.

    Per crop the model keeps the vision tower's ``patches (+ num_additional_image_tokens)`` tokens minus
    the CLS dropped by the ``"default"`` strategy; flat packing multiplies that by ``1 + grid crops``.
    Not known to ``AutoProcessor``: :func:`evl_kd_trainer.models.loading.load_processor` reloads it by
    the class name saved in ``processor_config.json``.
    """

    def _get_number_of_features(self, orig_height: int, orig_width: int, height: int, width: int) -> int:
        # ``height`` x ``width`` is the crop size. The stock callers subtract one token afterwards when the
        # strategy is "default" (their count includes the base crop's CLS once), so add it back here.
        crops = flat_num_crops((orig_height, orig_width), self.image_processor.image_grid_pinpoints, (height, width))
        drops_cls = self.vision_feature_select_strategy == "default"
        per_crop = (height // self.patch_size) * (width // self.patch_size) + self.num_additional_image_tokens
        per_crop -= int(drops_cls)
        return crops * per_crop + int(drops_cls)

    def flat_num_image_tokens(self, image_height: int, image_width: int) -> int:
        """Visual tokens of one image of the given original size (what ``<image>`` expands to)."""
        crop = self.image_processor.crop_size
        count = self._get_number_of_features(image_height, image_width, crop["height"], crop["width"])
        return count - int(self.vision_feature_select_strategy == "default")


__all__ = [
    "FLAT_MERGE_TYPE",
    "LlavaNextFlatForConditionalGeneration",
    "LlavaNextFlatModel",
    "LlavaNextFlatProcessor",
    "flat_num_crops",
]
