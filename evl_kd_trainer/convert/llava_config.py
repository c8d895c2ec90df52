"""Translate an original-LLaVA (``llava_llama``) config into a transformers ``LlavaNextConfig``.

Original LLaVA stores one flat Llama config plus ``mm_*`` fields; transformers nests a Llama
``text_config`` and a CLIP ``vision_config``. Fields whose meaning differs are translated, not copied:

* ``image_grid_pinpoints`` are ``(width, height)`` in LLaVA (``select_best_resolution(image.size, ...)``)
  but ``(height, width)`` in transformers. PULSE's grid is closed under swapping, so copying it
  unchanged keeps the set of resolutions but not their order, and the first-listed one wins ties
  (e.g. any square image smaller than two crops: LLaVA picks a 1x2 column, a copy a 2x1 row).
  Swapping each pair keeps both meaning and order.
* ``mm_vision_select_feature`` ``patch`` / ``cls_patch`` -> ``vision_feature_select_strategy``
  ``default`` / ``full``; ``mm_vision_select_layer`` -> ``vision_feature_layer``.
* ``mm_patch_merge_type`` is kept as an extra field (LLaVA's default ``flat`` when absent), which
  :func:`evl_kd_trainer.models.loading.load_model` uses to pick the flat class.

The CLIP config is not in the LLaVA folder (``mm_vision_tower`` is a Hub name): it is read from a
local CLIP folder when one is given or named, else taken from a table of the towers LLaVA used.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import AutoConfig, CLIPVisionConfig, LlamaConfig, LlavaNextConfig, PretrainedConfig

from evl_kd_trainer.convert.checkpoint_io import ConversionError

SUPPORTED_MERGE_TYPES = ("flat", "spatial_unpad")
_SELECT_STRATEGY = {"patch": "default", "cls_patch": "full"}
# Llama fields carried from LLaVA's flat config into text_config (legacy rope_theta/rope_scaling are
# turned into rope_parameters by LlamaConfig itself).
_LLAMA_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "max_position_embeddings",
    "initializer_range",
    "rms_norm_eps",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "attention_bias",
    "attention_dropout",
    "mlp_bias",
    "pretraining_tp",
    "bos_token_id",
    "eos_token_id",
)
# Vision configs of the CLIP towers original LLaVA used (public configs of these Hub repos), for
# folders whose config names the tower but which cannot be downloaded here.
KNOWN_VISION_TOWERS: dict[str, dict[str, Any]] = {
    "openai/clip-vit-large-patch14-336": {
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "image_size": 336,
        "patch_size": 14,
        "projection_dim": 768,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
    },
    "openai/clip-vit-large-patch14": {
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "image_size": 224,
        "patch_size": 14,
        "projection_dim": 768,
        "hidden_act": "quick_gelu",
        "layer_norm_eps": 1e-5,
    },
}


@dataclass(frozen=True)
class LlavaSourceConfig:
    """The fields of an original-LLaVA config the conversion needs, validated."""

    raw: dict[str, Any]
    merge_type: str
    grid_pinpoints_hw: list[list[int]]
    vision_feature_layer: int
    vision_feature_select_strategy: str
    vision_tower_name: str
    mm_hidden_size: int | None


def _require(raw: dict[str, Any], key: str, file: Path) -> Any:
    if key not in raw:
        raise ConversionError(f"{file}: missing field {key!r} (is this an original-LLaVA checkpoint?).")
    return raw[key]


def _parse_pinpoints(value: Any, file: Path) -> list[list[int]]:
    if isinstance(value, str):  # LLaVA accepts a Python literal string, e.g. "[(336, 672), ...]"
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError) as err:
            raise ConversionError(f"{file}: image_grid_pinpoints {value!r} is not a list literal.") from err
    ok = isinstance(value, (list, tuple)) and value
    ok = ok and all(isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(v, int) for v in p) for p in value)
    if not ok:
        raise ConversionError(f"{file}: image_grid_pinpoints must be a list of [width, height] pairs, got {value!r}.")
    return [[int(width_height[1]), int(width_height[0])] for width_height in value]  # (w, h) -> (h, w)


def read_llava_config(folder: str | Path) -> LlavaSourceConfig:
    """Read and validate ``folder/config.json`` of an original-LLaVA (LLaVA-NeXT / PULSE) checkpoint."""
    file = Path(folder) / "config.json"
    if not file.is_file():
        raise ConversionError(f"{folder}: no config.json; expected an original-LLaVA checkpoint folder.")
    try:
        raw = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ConversionError(f"{file}: invalid JSON: {err}") from err
    vision_tower = _require(raw, "mm_vision_tower", file)
    merge_type = raw.get("mm_patch_merge_type") or "flat"  # LLaVA: getattr(config, 'mm_patch_merge_type', 'flat')
    if merge_type not in SUPPORTED_MERGE_TYPES:
        raise ConversionError(
            f"{file}: mm_patch_merge_type {merge_type!r} is not supported; known: {', '.join(SUPPORTED_MERGE_TYPES)}."
        )
    aspect = raw.get("image_aspect_ratio")
    if aspect != "anyres":
        raise ConversionError(
            f"{file}: image_aspect_ratio {aspect!r} is not supported: only LLaVA-NeXT's 'anyres' converts to "
            "LlavaNextConfig (LLaVA-1.5's 'pad'/'square' would need LlavaConfig)."
        )
    projector = raw.get("mm_projector_type", "linear")
    if projector != "mlp2x_gelu":
        raise ConversionError(
            f"{file}: mm_projector_type {projector!r} is not supported (transformers' LLaVA-NeXT projector is "
            "'mlp2x_gelu': linear, GELU, linear)."
        )
    if raw.get("mm_use_im_start_end"):
        raise ConversionError(f"{file}: mm_use_im_start_end=true (image start/end tokens) is not supported.")
    select_feature = raw.get("mm_vision_select_feature", "patch")
    if select_feature not in _SELECT_STRATEGY:
        raise ConversionError(
            f"{file}: mm_vision_select_feature {select_feature!r} is not supported; known: patch, cls_patch."
        )
    layer = _require(raw, "mm_vision_select_layer", file)
    if not isinstance(layer, int):
        raise ConversionError(f"{file}: mm_vision_select_layer must be an int, got {layer!r}.")
    return LlavaSourceConfig(
        raw=raw,
        merge_type=merge_type,
        grid_pinpoints_hw=_parse_pinpoints(_require(raw, "image_grid_pinpoints", file), file),
        vision_feature_layer=layer,
        vision_feature_select_strategy=_SELECT_STRATEGY[select_feature],
        vision_tower_name=str(vision_tower),
        mm_hidden_size=raw.get("mm_hidden_size"),
    )


def local_vision_tower(source: LlavaSourceConfig, vision_tower: str | Path | None) -> Path | None:
    """The local CLIP folder to use: ``vision_tower`` if given (must exist), else ``mm_vision_tower`` when
    it names an existing folder, else ``None``."""
    if vision_tower is not None:
        path = Path(vision_tower)
        if not (path / "config.json").is_file():
            raise ConversionError(f"--vision-tower {path}: not a model folder (no config.json).")
        return path
    named = Path(source.vision_tower_name)
    return named if (named / "config.json").is_file() else None


def resolve_vision_config(source: LlavaSourceConfig, local_tower: Path | None) -> CLIPVisionConfig:
    """CLIP vision config from the local tower folder, else from :data:`KNOWN_VISION_TOWERS`."""
    if local_tower is not None:
        loaded: PretrainedConfig = AutoConfig.from_pretrained(local_tower)
        config = getattr(loaded, "vision_config", loaded)  # a full CLIPConfig holds it as vision_config
        if not isinstance(config, CLIPVisionConfig):
            raise ConversionError(f"{local_tower}: expected a CLIP model folder, found {type(loaded).__name__}.")
    elif source.vision_tower_name in KNOWN_VISION_TOWERS:
        config = CLIPVisionConfig(**KNOWN_VISION_TOWERS[source.vision_tower_name])
    else:
        raise ConversionError(
            f"Cannot determine the vision tower's config: mm_vision_tower={source.vision_tower_name!r} is neither a "
            f"local folder nor one of {', '.join(KNOWN_VISION_TOWERS)}; pass --vision-tower PATH to a local CLIP folder."
        )
    if source.mm_hidden_size is not None and source.mm_hidden_size != config.hidden_size:
        raise ConversionError(
            f"mm_hidden_size={source.mm_hidden_size} does not match the vision tower's hidden_size={config.hidden_size}."
        )
    return config


def build_text_config(source: LlavaSourceConfig, vocab_size: int, pad_token_id: int | None) -> LlamaConfig:
    """The Llama part of the LLaVA config, with the vocabulary grown to hold ``<image>``."""
    raw = source.raw
    if raw.get("tie_word_embeddings"):
        raise ConversionError("tie_word_embeddings=true is not supported (LLaVA-Llama/Vicuna has its own lm_head).")
    fields = {key: raw[key] for key in _LLAMA_FIELDS if key in raw and raw[key] is not None}
    return LlamaConfig(**fields, vocab_size=vocab_size, pad_token_id=pad_token_id, tie_word_embeddings=False)


def build_llava_next_config(
    source: LlavaSourceConfig,
    text_config: LlamaConfig,
    vision_config: CLIPVisionConfig,
    image_token_id: int,
) -> LlavaNextConfig:
    """The transformers config of the converted model; ``mm_patch_merge_type`` is kept as an extra field."""
    flat = source.merge_type == "flat"
    config = LlavaNextConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_index=image_token_id,
        projector_hidden_act="gelu",  # LLaVA's mlp2x_gelu uses nn.GELU() (exact erf)
        vision_feature_select_strategy=source.vision_feature_select_strategy,
        vision_feature_layer=source.vision_feature_layer,
        multimodal_projector_bias=True,
        tie_word_embeddings=False,
        image_grid_pinpoints=source.grid_pinpoints_hw,
        image_seq_length=(vision_config.image_size // vision_config.patch_size) ** 2,
        mm_patch_merge_type=source.merge_type,
    )
    config.architectures = ["LlavaNextFlatForConditionalGeneration" if flat else "LlavaNextForConditionalGeneration"]
    return config
