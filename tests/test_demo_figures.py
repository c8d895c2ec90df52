"""The demo report's figures compare like with like and mark what they show."""

from __future__ import annotations

import warnings

import pytest
import torch

from evl_kd_trainer.demo.figures import loss_panels, teacher_tokens_per_crop
from evl_kd_trainer.losses import sinkhorn_ot_loss
from evl_kd_trainer.testing import build_tiny_llava_next
from evl_kd_trainer.trainer.config import EVLDistillConfig


def test_loss_panels_put_cross_entropy_beside_cross_entropy():
    evl = [{"step": 1, "loss": 3.0, "ce_loss": 2.0, "ot_loss": 0.5}, {"step": 2, "loss": 2.5, "ce_loss": 1.8}]
    sft = [{"step": 1, "loss": 2.1, "ce_loss": 2.1}, {"step": 2, "loss": 1.9, "ce_loss": 1.9}]
    panels = loss_panels({"EVL": evl, "SFT": sft})
    assert list(panels) == ["ce_loss", "loss", "ot_loss"]
    assert panels["ce_loss"] == {"EVL": [(1, 2.0), (2, 1.8)], "SFT": [(1, 2.1), (2, 1.9)]}
    # SFT's `loss` is its cross-entropy, not a weighted total: it stays out of the total's panel
    assert panels["loss"] == {"EVL": [(1, 3.0), (2, 2.5)]}
    assert panels["ot_loss"] == {"EVL": [(1, 0.5)]}


def test_teacher_tokens_per_crop_matches_the_captured_flat_sequence():
    teacher, _ = build_tiny_llava_next(seed=0)
    vision = teacher.config.vision_config
    assert teacher_tokens_per_crop(teacher) == (vision.image_size // vision.patch_size) ** 2
    assert teacher_tokens_per_crop(torch.nn.Linear(2, 2)) is None


def test_sinkhorn_cap_is_a_config_field_the_warning_names():
    assert EVLDistillConfig(output_dir="x", sinkhorn_max_iter=3, use_cpu=True, bf16=False).sinkhorn_max_iter == 3
    with pytest.raises(ValueError, match="sinkhorn_max_iter"):
        EVLDistillConfig(output_dir="x", sinkhorn_max_iter=0, use_cpu=True, bf16=False)
    torch.manual_seed(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sinkhorn_ot_loss(torch.randn(1, 40, 8), torch.randn(1, 30, 8) * 3, epsilon=0.01, max_iter=0)
    assert any("sinkhorn_max_iter" in str(w.message) for w in caught)
