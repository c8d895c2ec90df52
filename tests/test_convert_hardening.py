"""convert-llava on hostile or damaged source folders: index entries outside the folder, refused pickles, old
non-zip .bin shards, truncated .bin and .safetensors files; every error is one line naming the file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import CLIPVisionConfig, CLIPVisionModel

from evl_kd_trainer.cli import main as evl_kd_main
from evl_kd_trainer.convert import ConversionError, convert_llava_checkpoint
from evl_kd_trainer.convert.checkpoint_io import CheckpointReader, checkpoint_weight_map
from tests.test_convert_llava import VISION, write_llava_checkpoint

TENSORS = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(4)}


def _index(folder: Path, weight_map: dict, name: str = "model.safetensors.index.json") -> None:
    (folder / name).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def _read_all(folder: Path) -> dict[str, torch.Tensor]:
    reader = CheckpointReader(checkpoint_weight_map(folder))
    return dict(reader.items_by_file())


class _Payload:
    """A pickle that would create a folder when unpickled without weights_only."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.makedirs, (self.path,))


# --- index entries ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    ["../outside.safetensors", "{abs}", "sub/../../outside.safetensors", 7, None, ""],
    ids=["dotdot", "absolute", "nested-dotdot", "number", "null", "empty"],
)
def test_index_entries_must_stay_inside_the_folder(tmp_path, entry):
    folder = tmp_path / "src"
    folder.mkdir()
    save_file(TENSORS, str(tmp_path / "outside.safetensors"))
    save_file({"c": torch.zeros(1)}, str(folder / "model-1.safetensors"))
    if entry == "{abs}":
        entry = str(tmp_path / "outside.safetensors")
    _index(folder, {"a": entry, "c": "model-1.safetensors"})
    with pytest.raises(ConversionError, match=r"model\.safetensors\.index\.json: shard .*(outside the checkpoint folder|is not a file name)"):  # fmt: skip
        checkpoint_weight_map(folder)


def test_links_inside_the_folder_are_followed_as_in_the_hub_cache(tmp_path):
    blobs, snapshot = tmp_path / "blobs", tmp_path / "snapshots" / "abc"
    blobs.mkdir()
    snapshot.mkdir(parents=True)
    save_file(TENSORS, str(blobs / "1234"))
    os.symlink(os.path.relpath(blobs / "1234", snapshot), snapshot / "model-1.safetensors")
    _index(snapshot, dict.fromkeys(TENSORS, "model-1.safetensors"))
    read = _read_all(snapshot)
    assert all(torch.equal(read[k], TENSORS[k]) for k in TENSORS)


def test_a_non_object_weight_map_is_named(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": ["a"]}))
    with pytest.raises(ConversionError, match=r"not a checkpoint index.*'weight_map' is list"):
        checkpoint_weight_map(tmp_path)


# --- .bin shards -----------------------------------------------------------------------------------------------


def test_a_refused_pickle_is_one_line_naming_the_shard(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"a": torch.ones(2), "b": _Payload(str(marker))}, tmp_path / "pytorch_model.bin")
    with pytest.raises(ConversionError) as caught:
        _read_all(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'pytorch_model.bin'}: not a plain tensor archive (it pickles ")
    assert "makedirs" in message and "\n" not in message and "weights_only" not in message
    assert not marker.exists()
    # The same for an old non-zip file.
    (tmp_path / "pytorch_model.bin").unlink()
    torch.save({"b": _Payload(str(marker))}, tmp_path / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    with pytest.raises(ConversionError, match=r"pytorch_model\.bin: not a plain tensor archive"):
        _read_all(tmp_path)
    assert not marker.exists()


def test_old_format_bin_shards_load_with_weights_only(tmp_path):
    torch.save(TENSORS, tmp_path / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    read = _read_all(tmp_path)
    assert read.keys() == TENSORS.keys() and all(torch.equal(read[k], TENSORS[k]) for k in TENSORS)


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_a_truncated_bin_shard_is_named(tmp_path, zip_format):
    path = tmp_path / "pytorch_model.bin"
    torch.save({"a": torch.randn(64, 64)}, path, _use_new_zipfile_serialization=zip_format)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ConversionError, match=rf"{path}: cannot read the \.bin shard \(truncated or corrupt\?\)"):
        _read_all(tmp_path)


def test_a_truncated_safetensors_file_is_named(tmp_path):
    path = tmp_path / "model-1.safetensors"
    save_file({"a": torch.randn(64, 64)}, str(path))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ConversionError, match=rf"{path}: cannot read the safetensors file \(truncated or corrupt\?\)"):
        checkpoint_weight_map(tmp_path)  # found by glob
    _index(tmp_path, {"a": "model-1.safetensors"})
    with pytest.raises(ConversionError, match=rf"{path}: cannot read the safetensors file"):
        _read_all(tmp_path)  # found through the index


# --- end to end ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    """A local tiny CLIP folder, for the vision config the source checkpoints name."""
    folder = tmp_path_factory.mktemp("clip")
    CLIPVisionModel(CLIPVisionConfig(**VISION)).save_pretrained(folder)
    return folder


def test_cli_reports_a_refused_pickle_in_one_line(tmp_path, capsys, clip_dir):
    write_llava_checkpoint(tmp_path / "src", fmt="bin", tower=str(clip_dir))
    shard = tmp_path / "src" / "pytorch_model-00002-of-00002.bin"
    tensors = torch.load(shard, weights_only=True)
    tensors[next(iter(tensors))] = _Payload(str(tmp_path / "pwned"))
    torch.save(tensors, shard)
    assert evl_kd_main(["convert-llava", str(tmp_path / "src"), str(tmp_path / "dst")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{shard}: not a plain tensor archive" in err and "weights_only" not in err
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "dst").exists()


def test_old_format_bin_checkpoint_converts_like_safetensors(tmp_path, clip_dir):
    write_llava_checkpoint(tmp_path / "st", fmt="safetensors", tower=str(clip_dir))
    write_llava_checkpoint(tmp_path / "bin", fmt="bin", tower=str(clip_dir))
    for shard in (tmp_path / "bin").glob("pytorch_model-*.bin"):
        torch.save(torch.load(shard, weights_only=True), shard, _use_new_zipfile_serialization=False)
    convert_llava_checkpoint(tmp_path / "st", tmp_path / "st_out")
    convert_llava_checkpoint(tmp_path / "bin", tmp_path / "bin_out")
    a, b = load_file(str(tmp_path / "st_out" / "model.safetensors")), load_file(str(tmp_path / "bin_out" / "model.safetensors"))  # fmt: skip
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
