"""The fingerprint of a cache: everything that, changed, would make the cached features differ from the live ones.

Fields (all strings or numbers, compared one by one so a mismatch names its field):

* ``teacher_weights``: a hash of the teacher's weight files (each safetensors file's header, its size and 16
  evenly spaced 64 KiB blocks of its data: cheap on a 14 GB checkpoint, yet two fine-tunes of one architecture,
  whose headers are identical, differ in every block), or of a sample of an in-memory model's parameters;
* ``teacher_config``: the teacher's ``config.json`` (its architecture and image settings);
* ``teacher_processor``, ``teacher_tokenizer``: the processor's settings (image processor, patch size, feature
  strategy, image token) and the tokenizer (vocabulary, merges, special tokens);
* ``chat_template``, ``teacher_max_length``, ``truncation``, ``special_token_strings`` (the strings escaped in the
  records' text, which include the student's: a cache is built with the student's processor for that reason);
* ``teacher_dtype``, ``hidden_layer``, ``kd_token_scope``, ``features`` (the stored set), ``compression``,
  ``visual_centroids``, ``format`` and ``package_version``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

CACHE_FORMAT = 1
_BLOCK = 64 * 1024
_BLOCKS = 16


def _sha(text: str | bytes) -> str:
    return hashlib.sha256(text.encode("utf-8") if isinstance(text, str) else text).hexdigest()[:32]


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def _sample_file(digest: Any, path: Path, start: int) -> None:
    size = path.stat().st_size
    digest.update(f"{path.name}:{size};".encode())
    span = max(size - start, 0)
    with path.open("rb") as handle:
        for i in range(_BLOCKS):
            handle.seek(start + (span - _BLOCK) * i // max(_BLOCKS - 1, 1) if span > _BLOCK else start)
            digest.update(handle.read(_BLOCK))


def weights_fingerprint(source: str | os.PathLike[str] | nn.Module) -> str:
    """``files:<hash>`` of a checkpoint folder's weight files, or ``params:<hash>`` of a model's parameters."""
    if isinstance(source, nn.Module):
        digest = hashlib.sha256()
        for name, tensor in sorted(source.state_dict().items()):
            flat = tensor.detach().reshape(-1)
            step = max(1, flat.numel() // 256)
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
            digest.update(flat[::step].float().cpu().numpy().tobytes())
        return "params:" + digest.hexdigest()[:32]
    folder = Path(source)
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not files:
        raise FileNotFoundError(f"{folder}: no *.safetensors or *.bin weight files to fingerprint.")
    digest = hashlib.sha256()
    for path in files:
        start = 0
        if path.suffix == ".safetensors":
            with path.open("rb") as handle:
                length = int.from_bytes(handle.read(8), "little")
                digest.update(handle.read(length))  # names, dtypes, shapes, offsets
            start = 8 + length
        _sample_file(digest, path, start)
    return "files:" + digest.hexdigest()[:32]


def processor_fingerprint(processor: Any) -> tuple[str, str]:
    """``(processor settings hash, tokenizer hash)`` of a processor (or a bare tokenizer)."""
    tokenizer = getattr(processor, "tokenizer", processor)
    settings = processor.to_dict() if hasattr(processor, "to_dict") and processor is not tokenizer else {}
    settings = {k: v for k, v in settings.items() if k not in ("chat_template", "processor_class")}
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocabulary = backend.to_str() if backend is not None else canonical_json(sorted(tokenizer.get_vocab().items()))
    special = {
        "special_tokens": getattr(tokenizer, "special_tokens_map", {}),
        "added": sorted((int(i), t.content) for i, t in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).items()),
        "padding_side": getattr(tokenizer, "padding_side", None),
        "pad": getattr(tokenizer, "pad_token_id", None),
    }
    return _sha(canonical_json(settings)), _sha(vocabulary + canonical_json(special))


def config_fingerprint(config: Any) -> str:
    values = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    for key in ("_name_or_path", "transformers_version", "_commit_hash", "dtype", "torch_dtype"):
        values.pop(key, None)
    for sub in values.values():
        if isinstance(sub, dict):
            for key in ("_name_or_path", "transformers_version", "dtype", "torch_dtype"):
                sub.pop(key, None)
    return _sha(canonical_json(values))


def text_fingerprint(text: str | None) -> str:
    return _sha(text or "")


def compare_fingerprints(expected: Mapping[str, Any], cached: Mapping[str, Any], where: str) -> None:
    """Raise ``ValueError`` naming the first field of ``expected`` whose value differs from ``cached``'s.

    Only the fields ``expected`` holds are compared, so a caller can check what it knows.
    """
    for field, value in expected.items():
        if field not in cached:
            raise ValueError(f"{where}: the cache's fingerprint has no field {field!r} (built by another version).")
        if canonical_json(cached[field]) != canonical_json(value):
            raise ValueError(
                f"{where}: the cache does not match this run: fingerprint field {field!r} is {cached[field]!r} in "
                f"the cache but {value!r} for this run; rebuild it (evl-kd cache-teacher) or fix the setting."
            )


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")
