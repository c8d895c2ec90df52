"""The `evl-kd` console script: version, help (fast, ordered, no inverted meanings), path checks that never wait
on an unreachable Hub."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from evl_kd_trainer import __version__
from evl_kd_trainer.cli import main as evl_kd_main
from evl_kd_trainer.scripts import help_cache
from evl_kd_trainer.scripts.common import check_model_path


def test_version(capsys):
    assert evl_kd_main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"evl-kd (evl_kd_trainer) {__version__}"


def test_top_level_help_imports_nothing_heavy():
    code = (
        "import sys, contextlib\nfrom evl_kd_trainer.cli import main\nmain(['--help'])\n"
        "with contextlib.suppress(SystemExit):\n    main(['convert-llava', '--help'])\nprint('torch' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.stdout.strip().endswith("False"), proc.stdout + proc.stderr
    assert "usage: evl-kd convert-llava" in proc.stdout


@pytest.fixture()
def fresh_help_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_distill_help_names_the_subcommand_and_lists_our_fields_first(fresh_help_cache, capsys):
    assert evl_kd_main(["distill", "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: evl-kd distill [--recipe RECIPE]")
    options = ("--recipe", "--kd_method", "--dataset_path", "--lora_r", "--learning_rate")
    order = [text.index(f"\n  {option} ") for option in options]
    assert order == sorted(order), order
    assert "inherited from SFTConfig" in text
    # HfArgumentParser copies `--X`'s help onto `--no_X`
    assert "Turn off --progress" not in text  # (not a field of this command)
    for line in text.splitlines():
        if line.strip().startswith("--no_"):
            following = text[text.index(line) + len(line) :].lstrip()
            assert following.startswith("Turn off --"), line


def test_help_is_cached_per_version_and_source_state(fresh_help_cache, capsys):
    assert evl_kd_main(["evaluate", "--help"]) == 0
    first = capsys.readouterr().out
    cached = list((fresh_help_cache / "evl_kd_trainer" / "help").glob("evl-kd-evaluate-*.txt"))
    assert len(cached) == 1 and cached[0].read_text() == first
    start = time.perf_counter()
    assert evl_kd_main(["evaluate", "--help"]) == 0
    assert capsys.readouterr().out == first
    assert time.perf_counter() - start < 1.0  # read back, not rebuilt (rebuilding imports TRL: seconds)
    assert "Turn off --progress." in first  # `--no_progress` used to read "Show progress bars."


def test_help_cache_key_follows_the_sources(fresh_help_cache, tmp_path, monkeypatch):
    key = help_cache._fingerprint("evl-kd distill")
    assert key == help_cache._fingerprint("evl-kd distill") != help_cache._fingerprint("evl-kd sft")
    source = help_cache.Path(help_cache.__file__)
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    try:
        assert help_cache._fingerprint("evl-kd distill") != key
    finally:
        os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_relative_path_that_is_not_a_folder_fails_at_once(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(
        FileNotFoundError, match=r"`model_name_or_path`: no such model folder: checkpoints/qwen-sft.*path"
    ):
        check_model_path("checkpoints/qwen-sft", "model_name_or_path")
    with pytest.raises(FileNotFoundError, match=r"no such model folder: \./qwen"):
        check_model_path("./qwen", "model_name_or_path")


def test_possible_hub_id_is_asked_once_with_a_short_timeout(tmp_path, monkeypatch):
    """Online, an `org/name` that is no folder and not cached: one request, then a clear error (no retries)."""
    from huggingface_hub import constants

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    # a port nothing listens on: the connection is refused, as with the network down
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("EVL_KD_HUB_CHECK_TIMEOUT", "2")
    start = time.perf_counter()
    with pytest.raises(
        FileNotFoundError, match=r"`teacher`: no such model folder: ckpt/pulse.*Hub could not be reached"
    ):
        check_model_path("ckpt/pulse", "teacher")
    assert time.perf_counter() - start < 10


def test_warming_fills_the_cache_of_every_recipe_command(fresh_help_cache, capsys):
    from evl_kd_trainer.cli import RECIPE_COMMANDS, warm_help_cache

    warm_help_cache()
    cached = sorted(path.name.rsplit("-", 1)[0] for path in (fresh_help_cache / "evl_kd_trainer" / "help").iterdir())
    assert cached == sorted(f"evl-kd-{command}" for command in RECIPE_COMMANDS)
    assert capsys.readouterr().out == ""  # warming prints nothing
