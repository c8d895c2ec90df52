"""The teacher modules a logit method applies itself, stored once per cache: the LM head and input embeddings.

They are saved in the teacher's own dtype, so logits recomputed from cached final-layer states are the live ones,
and rebuilt as plain ``nn.Linear`` / ``nn.Embedding`` modules (frozen) when read.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from evl_kd_trainer.cache.manifest import TMP_SUFFIX, fsync_file

HEAD_WEIGHT, HEAD_BIAS, EMBED_WEIGHT = "lm_head.weight", "lm_head.bias", "embed_tokens.weight"


def save_teacher_modules(path: Path, lm_head: nn.Module | None, embed_tokens: nn.Module | None) -> None:
    """Write the head's weight (and bias) and the embedding table, atomically."""
    tensors: dict[str, torch.Tensor] = {}
    if lm_head is not None:
        tensors[HEAD_WEIGHT] = lm_head.weight.detach().cpu().clone().contiguous()
        if getattr(lm_head, "bias", None) is not None:
            tensors[HEAD_BIAS] = lm_head.bias.detach().cpu().clone().contiguous()
    if embed_tokens is not None:
        tensors[EMBED_WEIGHT] = embed_tokens.weight.detach().cpu().clone().contiguous()
    tmp = path.with_name(path.name + TMP_SUFFIX)
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    fsync_file(tmp)
    os.replace(tmp, path)


def load_teacher_modules(
    path: Path, device: torch.device | str, dtype: torch.dtype | None
) -> tuple[nn.Linear | None, nn.Embedding | None]:
    """``(lm_head, embed_tokens)`` rebuilt from the file (``None`` for what it does not hold), frozen, in eval mode."""
    if not path.is_file():
        return None, None
    tensors = load_file(str(path), device=str(device))
    head = embed = None
    if HEAD_WEIGHT in tensors:
        weight = tensors[HEAD_WEIGHT]
        bias = tensors.get(HEAD_BIAS)
        head = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
        head.weight = nn.Parameter(weight.to(dtype or weight.dtype), requires_grad=False)
        if bias is not None:
            head.bias = nn.Parameter(bias.to(dtype or bias.dtype), requires_grad=False)
        head.eval()
    if EMBED_WEIGHT in tensors:
        weight = tensors[EMBED_WEIGHT]
        embed = nn.Embedding(weight.shape[0], weight.shape[1], device="meta")
        embed.weight = nn.Parameter(weight.to(dtype or weight.dtype), requires_grad=False)
        embed.eval()
    return head, embed
