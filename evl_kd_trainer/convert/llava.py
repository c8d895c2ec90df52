"""Convert an original-LLaVA checkpoint (PULSE-7B) into a folder our teacher loaders read.

Input: the folder original LLaVA saves (``config.json`` with ``model_type: llava_llama`` and ``mm_*``
fields, safetensors shards in LLaVA's key layout, a Llama tokenizer without ``<image>``). Output: a
transformers ``LlavaNextConfig`` folder (``mm_patch_merge_type`` kept), safetensors in transformers'
layout, the tokenizer with ``<image>`` added, and a processor with the llava_v1 chat template. For
``flat`` (PULSE) the processor is :class:`~evl_kd_trainer.models.llava_flat.LlavaNextFlatProcessor` and
:func:`~evl_kd_trainer.models.loading.load_model` picks the flat model class; ``spatial_unpad`` gives
stock transformers classes.

Key layout (original LLaVA -> transformers)::

    model.embed_tokens / model.layers.* / model.norm    -> model.language_model.*
    lm_head                                             -> lm_head
    model.mm_projector.0 / .2                           -> model.multi_modal_projector.linear_1 / linear_2
    model.image_newline                                 -> model.image_newline (spatial_unpad; unused by flat)
    model.vision_tower.vision_tower.vision_model.*      -> model.vision_tower.* (CLIPVisionModel's names)

Tensors are written under the names of the converted model's own state dict, so ``from_pretrained``
loads them as they are (transformers' ``save_pretrained`` of a loaded model re-serialises them in its
own layout).

The vocabulary grows by one row for ``<image>`` (LLaVA used the out-of-vocabulary id -200 instead).
Its embedding row is never read (image tokens are replaced by visual features); its ``lm_head`` row is
the mean of the others, whose logit is the mean logit, so by Jensen's inequality the converted model
gives ``<image>`` at most probability ``1 / V`` and the other logits are exactly the original ones.
"""

from __future__ import annotations

import copy
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import AddedToken
from transformers import (
    AutoTokenizer,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
)
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling

from evl_kd_trainer.convert.checkpoint_io import CheckpointReader, ConversionError, ShardWriter, checkpoint_weight_map
from evl_kd_trainer.convert.llava_config import (
    LlavaSourceConfig,
    build_llava_next_config,
    build_text_config,
    local_vision_tower,
    read_llava_config,
    resolve_vision_config,
)
from evl_kd_trainer.data.templates import LLAVA_V1_CHAT_TEMPLATE
from evl_kd_trainer.models.llava_flat import LlavaNextFlatForConditionalGeneration, LlavaNextFlatProcessor

logger = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"
DEFAULT_MAX_SHARD_BYTES = 4 * 1024**3
LLAVA_VISION_PREFIX = "model.vision_tower.vision_tower.vision_model."
VISION_PREFIX = "model.vision_tower."  # + CLIPVisionModel's own state-dict names
_EMBED, _LM_HEAD, _NEWLINE = "model.language_model.embed_tokens.weight", "lm_head.weight", "model.image_newline"
# The vision tower's in-memory names depend on the transformers version (5.x: no ``vision_model.``
# level inside CLIPVisionModel); the prefix is read off the target model, see ``_vision_prefix``.
_PREFIX_MAP = (
    ("model.mm_projector.0.", "model.multi_modal_projector.linear_1."),
    ("model.mm_projector.2.", "model.multi_modal_projector.linear_2."),
    ("model.embed_tokens.", "model.language_model.embed_tokens."),
    ("model.layers.", "model.language_model.layers."),
    ("model.norm.", "model.language_model.norm."),
    ("lm_head.", "lm_head."),
)
# Buffers older transformers saved with the weights; recomputed at load time.
_IGNORED_SUFFIXES = (".rotary_emb.inv_freq", "embeddings.position_ids")


@dataclass(frozen=True)
class LlavaConversion:
    """What :func:`convert_llava_checkpoint` wrote."""

    dst: Path
    merge_type: str
    image_token_id: int
    source_vocab_size: int
    vocab_size: int
    vision_weights: str  # "checkpoint" or the local CLIP folder they came from
    dropped_keys: tuple[str, ...]


def map_llava_key(key: str, vision_prefix: str = VISION_PREFIX) -> str | None:
    """The transformers name of an original-LLaVA tensor name, or ``None`` if the key is not LLaVA's.

    ``vision_prefix`` replaces ``model.vision_tower.vision_tower.vision_model.``: ``model.vision_tower.``
    for transformers 5 (whose CLIPVisionModel has no ``vision_model`` level), plus ``vision_model.`` for 4.x.
    """
    if key == _NEWLINE:
        return _NEWLINE
    if key.startswith(LLAVA_VISION_PREFIX):
        return vision_prefix + key[len(LLAVA_VISION_PREFIX) :]
    for old, new in _PREFIX_MAP:
        if key.startswith(old):
            return new + key[len(old) :]
    return None


def _grow_rows(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """Append rows equal to the mean row (see the module docstring for why the mean)."""
    extra = rows - weight.shape[0]
    if extra <= 0:
        return weight
    mean = weight.float().mean(0, keepdim=True).to(weight.dtype)
    return torch.cat([weight, mean.expand(extra, -1)], dim=0)


def _prepare_tokenizer(src: Path, source_vocab: int) -> tuple[object, int]:
    """Load LLaVA's Llama tokenizer, add ``<image>`` (special, never split) and a pad token.

    LLaVA resizes its embeddings to ``len(tokenizer)`` whenever it adds tokens, so a tokenizer of another
    size is not the one the model was trained with (or did not load: transformers builds an empty
    tokenizer from a folder without vocabulary files rather than failing).
    """
    if not any((src / name).is_file() for name in ("tokenizer.json", "tokenizer.model")):
        raise ConversionError(f"{src}: could not load the tokenizer: no tokenizer.json or tokenizer.model.")
    try:
        # The Llama config names the tokenizer family when tokenizer_config.json does not (and keeps
        # AutoTokenizer from parsing the llava_llama config.json).
        tokenizer = AutoTokenizer.from_pretrained(src, config=LlamaConfig())
    except Exception as err:  # the underlying errors vary (sentencepiece absent, bad JSON, ...)
        raise ConversionError(
            f"{src}: could not load the tokenizer ({type(err).__name__}: {err}). A folder with only "
            "tokenizer.model needs `pip install sentencepiece protobuf`."
        ) from err
    if len(tokenizer) != source_vocab:
        raise ConversionError(
            f"{src}: the tokenizer has {len(tokenizer)} tokens but model.embed_tokens has {source_vocab} rows; "
            "LLaVA keeps them equal, so this is not the checkpoint's tokenizer."
        )
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([AddedToken(IMAGE_TOKEN, special=True, normalized=False)], special_tokens=True)
    if tokenizer.pad_token is None:  # LLaVA's v1 training pads with <unk>
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer, int(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))


def _build_processor(config: LlavaNextConfig, tokenizer: object, flat: bool) -> LlavaNextProcessor:
    size = config.vision_config.image_size
    # LLaVA's CLIP preprocessing: bicubic resize (shortest edge), centre crop, CLIP mean/std; anyres
    # padding with black before normalisation.
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_grid_pinpoints=config.image_grid_pinpoints,
        image_mean=list(OPENAI_CLIP_MEAN),
        image_std=list(OPENAI_CLIP_STD),
        resample=PILImageResampling.BICUBIC,
        do_pad=True,
    )
    cls = LlavaNextFlatProcessor if flat else LlavaNextProcessor
    return cls(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=config.vision_config.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        chat_template=LLAVA_V1_CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,  # CLIP's CLS token
    )


def _expected_shapes(config: LlavaNextConfig, flat: bool) -> dict[str, torch.Size]:
    """Names and shapes of the converted model's state dict: the output is written under these names, which
    ``from_pretrained`` loads without renaming."""
    cls = LlavaNextFlatForConditionalGeneration if flat else LlavaNextForConditionalGeneration
    with torch.device("meta"):  # shapes only: no memory for a 7B model
        model = cls(copy.deepcopy(config))
    return {name: tensor.shape for name, tensor in model.state_dict().items()}


def _vision_prefix(expected: dict[str, torch.Size]) -> str:
    nested = VISION_PREFIX + "vision_model."
    return nested if any(name.startswith(nested) for name in expected) else VISION_PREFIX


def _external_vision_tensors(folder: Path, config: CLIPVisionConfig) -> Iterator[tuple[str, torch.Tensor]]:
    model, info = CLIPVisionModel.from_pretrained(folder, config=config, output_loading_info=True)
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        raise ConversionError(f"{folder}: the CLIP folder lacks vision weights {missing[:5]} ({len(missing)} in all).")
    for name, tensor in model.state_dict().items():
        yield VISION_PREFIX + name, tensor


def _check_destination(src: Path, dst: Path, overwrite: bool) -> None:
    if not src.is_dir():
        raise ConversionError(f"{src}: no such checkpoint folder.")
    if dst.resolve() == src.resolve():
        raise ConversionError(f"{dst}: the destination must differ from the source.")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())) and not overwrite:
        raise ConversionError(f"{dst}: exists and is not empty (pass overwrite=True / --overwrite).")


def _has_vision_weights(reader: CheckpointReader, src: Path) -> bool:
    """Whether the checkpoint holds the vision tower; raises on keys outside LLaVA's layout."""
    unknown = [k for k in reader.keys() if not k.endswith(_IGNORED_SUFFIXES) and map_llava_key(k) is None]
    if unknown:
        raise ConversionError(
            f"{src}: {len(unknown)} tensor(s) are not in original LLaVA's layout, e.g. {unknown[:5]} "
            "(already a transformers checkpoint? then load it directly)."
        )
    if "model.embed_tokens.weight" not in reader:
        raise ConversionError(f"{src}: the checkpoint has no 'model.embed_tokens.weight'.")
    return any(k.startswith(LLAVA_VISION_PREFIX) for k in reader.keys())


def _write_weights(
    reader: CheckpointReader,
    writer: ShardWriter,
    expected: dict[str, torch.Size],
    vocab_size: int,
    dtype: torch.dtype,
    flat: bool,
    external_vision: Iterator[tuple[str, torch.Tensor]] | None,
) -> list[str]:
    """Stream the source (and external vision) tensors into ``writer`` under the converted names, checking
    each against the converted model's shapes; return the source keys deliberately left out."""
    dropped: list[str] = []
    vision_prefix = _vision_prefix(expected)

    def tensors() -> Iterator[tuple[str, str, torch.Tensor]]:
        for key, tensor in reader.items_by_file():
            yield key, map_llava_key(key, vision_prefix) or "", tensor
        if external_vision is not None:
            for name, tensor in external_vision:
                yield name, name, tensor

    for key, name, tensor in tensors():
        if key.endswith(_IGNORED_SUFFIXES) or (flat and name == _NEWLINE):
            dropped.append(key)  # a flat model has no newline embedding: LLaVA never used it
            continue
        if name in (_EMBED, _LM_HEAD):
            tensor = _grow_rows(tensor, vocab_size)
        if tensor.is_floating_point():
            tensor = tensor.to(dtype)
        if name not in expected:
            raise ConversionError(f"source tensor {key!r} maps to {name!r}, which the converted model does not have.")
        if tensor.shape != expected[name]:
            raise ConversionError(
                f"source tensor {key!r}: shape {tuple(tensor.shape)} does not fit {name!r} "
                f"{tuple(expected[name])} of the converted config."
            )
        writer.add(name, tensor)
    written = set(writer.close())
    missing = sorted(set(expected) - written)
    if missing:
        hint = " (image_newline is required for spatial_unpad)" if _NEWLINE in missing else ""
        raise ConversionError(f"the checkpoint lacks {len(missing)} tensor(s), e.g. {missing[:5]}{hint}.")
    return dropped


def convert_llava_checkpoint(
    src: str | Path,
    dst: str | Path,
    *,
    vision_tower: str | Path | None = None,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> LlavaConversion:
    """Convert the original-LLaVA checkpoint folder ``src`` into a transformers LLaVA-NeXT folder ``dst``.

    Args:
        vision_tower: local CLIP folder (e.g. a copy of ``openai/clip-vit-large-patch14-336``) for its
            config and, when ``src`` has no ``model.vision_tower.vision_tower.*`` tensors, its weights.
            Weights in ``src`` win: LLaVA-NeXT training may have tuned the tower.
        dtype: cast floating tensors to this dtype; default: the dtype of ``src``'s embeddings.
        overwrite: replace a non-empty ``dst``.
        max_shard_bytes: size limit of each output safetensors shard.

    The output is written to a sibling temporary folder and moved to ``dst`` only when complete.
    Raises :class:`ConversionError` naming the file, tensor or config field at fault.
    """
    src, dst = Path(src), Path(dst)
    _check_destination(src, dst, overwrite)
    source: LlavaSourceConfig = read_llava_config(src)
    reader = CheckpointReader(checkpoint_weight_map(src))
    has_vision = _has_vision_weights(reader, src)
    tower_dir = local_vision_tower(source, vision_tower)
    if not has_vision and tower_dir is None:
        raise ConversionError(
            f"{src}: the checkpoint has no vision tower weights ({LLAVA_VISION_PREFIX}*) and no local CLIP folder "
            f"was given: pass --vision-tower PATH (a local copy of {source.vision_tower_name})."
        )
    vision_config = resolve_vision_config(source, tower_dir)
    embed = reader.get("model.embed_tokens.weight")
    source_vocab = int(embed.shape[0])
    tokenizer, image_token_id = _prepare_tokenizer(src, source_vocab)
    vocab_size = max(source_vocab, len(tokenizer))
    text_config = build_text_config(source, vocab_size, tokenizer.pad_token_id)
    config = build_llava_next_config(source, text_config, vision_config, image_token_id)
    flat = source.merge_type == "flat"
    target_dtype = dtype or embed.dtype
    for part in (config, config.text_config, config.vision_config):  # what from_pretrained(dtype="auto") reads
        part.dtype = target_dtype
    expected = _expected_shapes(config, flat)
    external = None if has_vision else _external_vision_tensors(tower_dir, vision_config)  # type: ignore[arg-type]
    if has_vision and tower_dir is not None:
        logger.info("Using the vision tower weights in %s; %s only provides the vision config.", src, tower_dir)

    tmp = dst.parent / f".{dst.name}.converting"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        writer = ShardWriter(tmp, max_shard_bytes)
        dropped = _write_weights(reader, writer, expected, vocab_size, target_dtype, flat, external)
        config.save_pretrained(tmp)
        _build_processor(config, tokenizer, flat).save_pretrained(tmp)
        if (src / "generation_config.json").is_file():
            shutil.copy2(src / "generation_config.json", tmp / "generation_config.json")
        if dst.is_dir():
            shutil.rmtree(dst)
        elif dst.exists():
            dst.unlink()
        tmp.rename(dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(
        "Converted %s -> %s (%s, <image> = %d, vocab %d -> %d)",
        src,
        dst,
        source.merge_type,
        image_token_id,
        source_vocab,
        vocab_size,
    )
    return LlavaConversion(
        dst=dst,
        merge_type=source.merge_type,
        image_token_id=image_token_id,
        source_vocab_size=source_vocab,
        vocab_size=vocab_size,
        vision_weights="checkpoint" if has_vision else str(tower_dir),
        dropped_keys=tuple(dropped),
    )
