"""Read a (possibly sharded) checkpoint tensor by tensor and write a sharded safetensors checkpoint.

A 7B teacher in fp16 is ~14 GB, close to a small machine's RAM: the converter streams, holding one
output shard (plus the tensor being read) at a time instead of a whole state dict.

Source files are untrusted: index entries must name files inside the checkpoint folder, ``.bin`` shards are
loaded with ``weights_only=True`` (old non-zip ``torch.save`` files too, without mmap), and a refused pickle, a
truncated or otherwise unreadable shard is a one-line :class:`ConversionError` naming the file.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file


class ConversionError(ValueError):
    """A checkpoint cannot be converted; the message names the file, key or config field at fault."""


_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def _shard_path(folder: Path, name: Any, index_file: Path) -> Path:
    """The file an index entry names, which must be a relative path inside ``folder``.

    The check is on the name (no absolute path, no ``..``): symlinks *inside* the folder are followed, as in the
    Hub cache, whose snapshot folders hold every shard as a link into its ``blobs`` folder.
    """
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ConversionError(f"{index_file}: shard name {name!r} is not a file name.")
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if os.path.isabs(name) or PurePosixPath(name).is_absolute() or ".." in parts or re.match(r"^[A-Za-z]:", name):
        raise ConversionError(
            f"{index_file}: shard {name!r} lies outside the checkpoint folder {folder}; refusing to read it."
        )
    return folder / name


def _index_weight_map(folder: Path, index_file: Path) -> dict[str, Path]:
    try:
        weight_map = json.loads(index_file.read_text(encoding="utf-8"))["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError(f"'weight_map' is {type(weight_map).__name__}, not an object")
    except (ValueError, KeyError, TypeError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ConversionError(f"{index_file}: not a checkpoint index (no 'weight_map'): {err}") from err
    files = {name: _shard_path(folder, name, index_file) for name in set(weight_map.values())}
    files = dict(sorted(files.items()))
    missing = [name for name, path in files.items() if not path.is_file()]
    if missing:
        raise ConversionError(
            f"{folder}: shard(s) {', '.join(missing)} listed in {index_file.name} are missing "
            f"({sum(v in missing for v in weight_map.values())} tensors)."
        )
    return {key: files[name] for key, name in weight_map.items()}


def checkpoint_weight_map(folder: str | Path) -> dict[str, Path]:
    """Map every tensor name of the checkpoint in ``folder`` to the file holding it.

    Reads ``model.safetensors.index.json`` / ``pytorch_model.bin.index.json`` when present (and checks
    that every listed shard exists), otherwise the ``*.safetensors`` (or ``pytorch_model*.bin``) files.
    """
    folder = Path(folder)
    for name in _INDEX_FILES:
        if (folder / name).is_file():
            return _index_weight_map(folder, folder / name)
    safetensors_files = sorted(folder.glob("*.safetensors"))
    if safetensors_files:
        mapping: dict[str, Path] = {}
        for path in safetensors_files:
            with _open_safetensors(path) as handle:
                mapping.update(dict.fromkeys(handle.keys(), path))
        return mapping
    bin_files = sorted(folder.glob("pytorch_model*.bin"))
    if bin_files:
        mapping = {}
        for path in bin_files:
            mapping.update(dict.fromkeys(_load_bin(path).keys(), path))
        return mapping
    raise ConversionError(f"{folder}: no weights found (no *.safetensors, pytorch_model*.bin or index file).")


def _open_safetensors(path: Path) -> Any:
    try:
        return safe_open(str(path), framework="pt")
    except Exception as err:  # SafetensorError (truncated header or data), OSError
        raise ConversionError(f"{path}: cannot read the safetensors file (truncated or corrupt?): {err}") from err


def _load_bin(path: Path) -> dict[str, torch.Tensor]:
    """A ``pytorch_model*.bin`` shard, loaded with ``weights_only=True`` (pickled code is refused).

    A zip archive (``torch.save``'s format since 1.6) is memory-mapped, so a multi-GB shard stays on disk; an old
    non-zip file cannot be mapped and is read whole.
    """
    mmap = zipfile.is_zipfile(path)
    try:
        state = torch.load(path, map_location="cpu", mmap=mmap, weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message advises weights_only=False, i.e. running whatever the file pickled: say what it holds.
        found = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f" (it pickles {found.group(1)})" if found else ""
        raise ConversionError(
            f"{path}: not a plain tensor archive{what}; refusing to unpickle it (convert it to safetensors where it "
            "came from, or re-save its tensors alone)."
        ) from None
    except Exception as err:  # RuntimeError (zip), EOFError, struct.error (old format), OSError
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConversionError(f"{path}: cannot read the .bin shard (truncated or corrupt?): {detail}") from err
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConversionError(f"{path}: not a plain tensor archive (expected a dict of tensors).")
    return state


class CheckpointReader:
    """Tensors of a checkpoint by name, opening each shard once (safetensors lazily, .bin memory-mapped)."""

    def __init__(self, weight_map: dict[str, Path]) -> None:
        self.weight_map = weight_map
        self._open: dict[Path, Any] = {}

    def keys(self) -> list[str]:
        return list(self.weight_map)

    def __contains__(self, key: object) -> bool:
        return key in self.weight_map

    def get(self, key: str) -> torch.Tensor:
        path = self.weight_map[key]
        if path not in self._open:
            if path.suffix == ".safetensors":
                self._open[path] = _open_safetensors(path)
            else:
                self._open[path] = _load_bin(path)
        handle = self._open[path]
        if path.suffix != ".safetensors":
            if key not in handle:
                raise ConversionError(f"{path}: has no tensor {key!r}, which the index places there.")
            return handle[key]
        try:
            return handle.get_tensor(key)
        except Exception as err:  # SafetensorError: a key the index places in the wrong file, unreadable data
            raise ConversionError(f"{path}: cannot read tensor {key!r}: {err}") from err

    def items_by_file(self) -> Iterator[tuple[str, torch.Tensor]]:
        """All tensors, shard by shard (each shard is then read sequentially), closing finished shards."""
        by_file: dict[Path, list[str]] = {}
        for key, path in self.weight_map.items():
            by_file.setdefault(path, []).append(key)
        for path, keys in by_file.items():
            for key in keys:
                yield key, self.get(key)
            self._open.pop(path, None)


class ShardWriter:
    """Accumulate tensors and write ``model-XXXXX-of-YYYYY.safetensors`` shards plus their index
    (or a single ``model.safetensors``), flushing whenever a shard reaches ``max_shard_bytes``."""

    def __init__(self, folder: str | Path, max_shard_bytes: int) -> None:
        if max_shard_bytes <= 0:
            raise ValueError(f"max_shard_bytes must be positive, got {max_shard_bytes}.")
        self.folder = Path(folder)
        self.max_shard_bytes = max_shard_bytes
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._shards: list[tuple[Path, list[str]]] = []
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        if name in self._pending or any(name in keys for _, keys in self._shards):
            raise ConversionError(f"tensor {name!r} would be written twice (two source keys map to it).")
        size = tensor.numel() * tensor.element_size()
        if self._pending and self._pending_bytes + size > self.max_shard_bytes:
            self._flush()
        # safetensors refuses views sharing storage; a contiguous clone owns its memory.
        self._pending[name] = tensor.detach().contiguous().clone()
        self._pending_bytes += size
        self.total_bytes += size

    def _flush(self) -> None:
        if not self._pending:
            return
        path = self.folder / f"model-part-{len(self._shards):05d}.safetensors"
        save_file(self._pending, str(path), metadata={"format": "pt"})
        self._shards.append((path, list(self._pending)))
        self._pending, self._pending_bytes = {}, 0

    def close(self) -> list[str]:
        """Write the last shard, name the shards and the index; return the written tensor names."""
        self._flush()
        names = [name for _, keys in self._shards for name in keys]
        if len(self._shards) == 1:
            self._shards[0][0].rename(self.folder / "model.safetensors")
            return names
        count = len(self._shards)
        weight_map: dict[str, str] = {}
        for i, (path, keys) in enumerate(self._shards):
            final = f"model-{i + 1:05d}-of-{count:05d}.safetensors"
            path.rename(self.folder / final)
            weight_map.update(dict.fromkeys(keys, final))
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
        (self.folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True))
        return names
