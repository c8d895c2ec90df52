"""Builders of tiny random offline VLMs, processors, images and datasets for tests and demos.

Every builder is deterministic in ``seed``, needs no network and takes well under a second.
"""

from __future__ import annotations

from evl_kd_trainer.testing.bad_records import HostileCorpus, write_hostile_corpus
from evl_kd_trainer.testing.images import make_ecg_like_image, make_tiny_vlm_dataset
from evl_kd_trainer.testing.llava import anyres_grid, build_tiny_llava, build_tiny_llava_next
from evl_kd_trainer.testing.qwen import (
    Qwen2_5_VLImageOnlyProcessor,
    Qwen2VLImageOnlyProcessor,
    Qwen3VLImageOnlyProcessor,
    build_tiny_qwen2_5_vl,
    build_tiny_qwen2_vl,
    build_tiny_qwen3_vl,
)
from evl_kd_trainer.testing.tokenizers import build_tiny_llama_tokenizer, build_tiny_qwen_tokenizer

__all__ = [
    "HostileCorpus",
    "Qwen2_5_VLImageOnlyProcessor",
    "Qwen2VLImageOnlyProcessor",
    "Qwen3VLImageOnlyProcessor",
    "anyres_grid",
    "build_tiny_llama_tokenizer",
    "build_tiny_llava",
    "build_tiny_llava_next",
    "build_tiny_qwen2_5_vl",
    "build_tiny_qwen2_vl",
    "build_tiny_qwen3_vl",
    "build_tiny_qwen_tokenizer",
    "make_ecg_like_image",
    "make_tiny_vlm_dataset",
    "write_hostile_corpus",
]
