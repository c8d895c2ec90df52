"""The recipes hold the paper's numbers (Tables 2-4) and every key is a field of the script's configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from trl import ModelConfig

from evl_kd_trainer.scripts.args import DataArguments
from evl_kd_trainer.scripts.recipe import validate_recipe
from evl_kd_trainer.scripts.sft import VLMSFTConfig
from evl_kd_trainer.trainer.config import EVLDistillConfig

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def load(name: str) -> dict:
    return yaml.safe_load((RECIPES / name).read_text())


def test_stage_one_recipe_is_table_2():
    r = load("sft_qwen3vl_2b.yaml")
    assert r["max_steps"] == 54195
    assert (r["learning_rate"], r["projector_learning_rate"]) == (2e-4, 5e-4)
    assert r["per_device_train_batch_size"] * r["gradient_accumulation_steps"] == 64
    assert r["bf16"] is True and r["lr_scheduler_type"] == "cosine" and r["warmup_steps"] == 0.03
    assert r["dtype"] == "float32"  # bf16 mixed precision over fp32 master weights
    assert r["weight_decay"] == 0.01 and r["max_length"] == 4096
    assert (r["min_pixels"], r["max_pixels"]) == (784, 50176)
    validate_recipe(r, (ModelConfig, DataArguments, VLMSFTConfig), "sft_qwen3vl_2b.yaml")


@pytest.mark.parametrize(
    "name", ["pulse_to_qwen.yaml", *(f"baselines/{m}.yaml" for m in ("sft", "uld", "multilevel_ot", "dskd", "emkd"))]
)
def test_stage_two_recipes_are_table_3(name):
    r = load(name)
    assert r["num_train_epochs"] == 1
    assert (r["learning_rate"], r["aligner_learning_rate"], r["projector_learning_rate"]) == (2e-4, 5e-4, 5e-4)
    assert r["per_device_train_batch_size"] * r["gradient_accumulation_steps"] == 48
    assert r["bf16"] is True and r["lr_scheduler_type"] == "cosine" and r["warmup_steps"] == 0.03
    assert r["dtype"] == "float32"  # bf16 mixed precision over fp32 master weights, the frozen teacher in bf16
    assert r["kd_method"] == "sft" or r["teacher_model_init_kwargs"] == {"dtype": "bfloat16"}
    assert r["weight_decay"] == 0.01 and r["max_length"] == 4096
    assert (r["min_pixels"], r["max_pixels"]) == (784, 50176)
    assert r["model_name_or_path"] == load("pulse_to_qwen.yaml")["model_name_or_path"]  # same SFT start
    validate_recipe(r, (ModelConfig, DataArguments, EVLDistillConfig), name)


def test_evl_recipe_is_table_4():
    r = load("pulse_to_qwen.yaml")
    assert r["kd_method"] == "evl"
    assert (r["alpha"], r["lambda_mhca"], r["lambda_rel"], r["lambda_ot"]) == (0.3, 1.0, 0.03, 0.1)
    assert (r["mhca_num_heads"], r["sinkhorn_epsilon"]) == (8, 0.1)
    # and the config's defaults are the same numbers
    defaults = EVLDistillConfig(output_dir="x", use_cpu=True, bf16=False)
    assert (defaults.alpha, defaults.lambda_mhca, defaults.lambda_rel, defaults.lambda_ot) == (0.3, 1.0, 0.03, 0.1)
    assert (defaults.mhca_num_heads, defaults.sinkhorn_epsilon, defaults.aligner_learning_rate) == (8, 0.1, 5e-4)


@pytest.mark.parametrize("path", sorted(p.relative_to(RECIPES) for p in RECIPES.rglob("*.yaml")))
def test_every_recipe_names_its_hardware(path):
    header = (RECIPES / path).read_text().split("\n\n")[0]
    if path.parts[0] == "accelerate_configs":
        assert "GPU" in header, path  # e.g. "on one node with 8 GPUs"
    else:
        assert "# Hardware: " in header and "Launch:" in header, path


def test_cached_recipe_is_the_evl_recipe_reading_a_cache():
    from evl_kd_trainer.cache.arguments import CacheArguments

    live, cached = load("pulse_to_qwen.yaml"), load("pulse_to_qwen_cached.yaml")
    assert cached.pop("teacher_cache_dir") == "cache/pulse-7b-evl"
    assert cached.pop("output_dir") != live.pop("output_dir")
    assert cached == live  # the same run, the teacher's features read instead of computed
    raw = load("pulse_to_qwen_cached.yaml")
    validate_recipe(raw, (ModelConfig, DataArguments, EVLDistillConfig), "pulse_to_qwen_cached.yaml")
    validate_recipe(raw, (ModelConfig, DataArguments, EVLDistillConfig, CacheArguments), "pulse_to_qwen_cached.yaml")


def test_demo_recipes_train_a_stronger_teacher_on_more_data_and_distil_with_table_4():
    """The embedded default: the teacher sees every training strip, the student (SFT, distillation and its SFT
    control alike) only its smaller labelled budget; stage 2 keeps the paper's loss weights and learning rates."""
    teacher, student, distill = (load(f"demo/{n}.yaml") for n in ("teacher_sft", "student_sft", "distill"))
    assert teacher["dataset_path"].endswith("/train.json")
    assert student["dataset_path"] == distill["dataset_path"] and distill["dataset_path"].endswith("student_train.json")
    weights = (distill["alpha"], distill["lambda_mhca"], distill["lambda_rel"], distill["lambda_ot"])
    assert weights == (0.3, 1, 0.03, 0.1)
    assert (distill["learning_rate"], distill["aligner_learning_rate"]) == (2e-4, 5e-4)
    assert teacher["lr_scheduler_kwargs"]["num_decay_steps"] < 250 * teacher["num_train_epochs"]
    for recipe, types in (
        (teacher, (ModelConfig, DataArguments, VLMSFTConfig)),
        (student, (ModelConfig, DataArguments, VLMSFTConfig)),
        (distill, (ModelConfig, DataArguments, EVLDistillConfig)),
    ):
        validate_recipe(recipe, types, "demo recipe")
