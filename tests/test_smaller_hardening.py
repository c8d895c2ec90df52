"""Smaller hardening points: fp16 on a CPU is refused instead of silently training in fp32, and the demo's
figures read a run's `training_args.bin` with `torch.load(weights_only=True)`."""

from __future__ import annotations

import os

import pytest
import torch

from evl_kd_trainer.demo.figures import load_training_args
from evl_kd_trainer.trainer import EVLDistillConfig

CPU = dict(bf16=False, gradient_checkpointing=False, use_cpu=True, report_to="none")


def test_fp16_on_a_cpu_is_an_error(tmp_path):
    with pytest.raises(ValueError, match=r"`fp16=True` needs a GPU .* silently train in fp32"):
        EVLDistillConfig(output_dir=str(tmp_path), fp16=True, **CPU)
    assert EVLDistillConfig(output_dir=str(tmp_path), **{**CPU, "bf16": True}).bf16  # bf16 on a CPU is fine


class _Payload:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.makedirs, (self.path,))


def test_training_args_load_without_unpickling_code(tmp_path):
    args = EVLDistillConfig(output_dir=str(tmp_path / "run"), mhca_num_heads=4, kd_method="evl", **CPU)
    torch.save(args, tmp_path / "training_args.bin")  # what Trainer writes beside every checkpoint
    loaded = load_training_args(tmp_path / "training_args.bin")
    assert isinstance(loaded, EVLDistillConfig) and loaded.mhca_num_heads == 4 and loaded.kd_method == "evl"

    marker = tmp_path / "pwned"
    torch.save({"args": _Payload(str(marker))}, tmp_path / "evil.bin")
    with pytest.raises(ValueError, match=r"evil\.bin: refusing to load it: it pickles os\.makedirs"):
        load_training_args(tmp_path / "evil.bin")
    assert not marker.exists()
