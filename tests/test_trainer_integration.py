"""EVLDistillTrainer with the rest of the HF stack: PEFT LoRA, the Hub, and drop-in use in an SFT script."""

from __future__ import annotations

import os

import pytest
import torch
from huggingface_hub import HfApi
from peft import LoraConfig, PeftModel
from trl import SFTConfig, SFTTrainer

from evl_kd_trainer.testing import build_tiny_llava_next, build_tiny_qwen3_vl, make_tiny_vlm_dataset
from evl_kd_trainer.trainer import ALIGNER_WEIGHTS_NAME, EVLDistillTrainer
from evl_kd_trainer.trainer.model_card import build_model_card
from tests.test_trainer import COMMON, make_args, step_logs


def test_lora_student_trains_adapters_and_aligners_and_saves_a_peft_adapter(tmp_path):
    student, teacher = build_tiny_qwen3_vl(seed=0), build_tiny_llava_next(seed=1)
    base_before = {k: v.clone() for k, v in student[0].state_dict().items()}
    trainer = EVLDistillTrainer(
        student[0],
        teacher_model=teacher[0],
        args=make_args(tmp_path, max_steps=3),
        train_dataset=make_tiny_vlm_dataset(n=8),
        processing_class=student[1],
        teacher_processing_class=teacher[1],
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    assert isinstance(trainer.model, PeftModel)
    aligner_before = {k: v.clone() for k, v in trainer.kd_method.state_dict().items()}
    trainer.train()
    assert len(step_logs(trainer)) == 3

    state = trainer.model.get_base_model().state_dict()
    lora_keys = [k for k in state if "lora_" in k]
    assert lora_keys
    for key, value in base_before.items():  # frozen base weights stay put (PEFT names them base_layer)
        peft_key = key.replace("q_proj.weight", "q_proj.base_layer.weight").replace(
            "v_proj.weight", "v_proj.base_layer.weight"
        )
        if "language_model" in key and peft_key in state:
            assert torch.equal(state[peft_key], value), key
    for key, value in aligner_before.items():
        assert not torch.equal(trainer.kd_method.state_dict()[key], value), key

    out = tmp_path / "adapter"
    trainer.save_model(str(out))
    assert (out / "adapter_config.json").is_file() and (out / ALIGNER_WEIGHTS_NAME).is_file()
    fresh = build_tiny_qwen3_vl(seed=0)[0]
    loaded = PeftModel.from_pretrained(fresh, str(out))
    trained_lora = {k: v for k, v in trainer.model.state_dict().items() if "lora_" in k}
    loaded_lora = {k: v for k, v in loaded.state_dict().items() if "lora_" in k}
    assert set(loaded_lora) == set(trained_lora)
    for key, value in trained_lora.items():
        assert torch.equal(loaded_lora[key], value), key


def test_push_to_hub_sends_the_student_processor_and_card_only(tmp_path, monkeypatch):
    sent: dict = {}

    def fake_create_repo(self, repo_id, *args, **kwargs):
        sent["repo_id"] = repo_id
        from huggingface_hub import RepoUrl

        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def fake_upload_folder(self, *, repo_id, folder_path, ignore_patterns=None, allow_patterns=None, **kwargs):
        from huggingface_hub.utils import filter_repo_objects

        every = [
            os.path.relpath(os.path.join(root, name), folder_path)
            for root, _, names in os.walk(folder_path)
            for name in names
        ]
        # the selection upload_folder itself makes, with the patterns Trainer passed
        files = filter_repo_objects(every, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns)
        sent["files"] = sorted(files)
        sent["card"] = open(os.path.join(folder_path, "README.md"), encoding="utf-8").read()
        return "https://huggingface.co/fake/commit/0"

    # the Hub's HTTP API is the boundary we cannot reach: intercept it there
    monkeypatch.setattr(HfApi, "create_repo", fake_create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", fake_upload_folder)
    student, teacher = build_tiny_qwen3_vl(seed=0), build_tiny_llava_next(seed=1)
    student[0].config._name_or_path = "Qwen/Qwen3-VL-2B-Instruct"
    teacher[0].config._name_or_path = "PULSE-ECG/PULSE-7B"
    teacher[0].config._commit_hash = "abc1234"
    trainer = EVLDistillTrainer(
        student[0],
        teacher_model=teacher[0],
        args=make_args(
            tmp_path,
            max_steps=2,
            push_to_hub=True,
            hub_model_id="me/qwen3vl-ecg-evl",
            eval_strategy="steps",
            eval_steps=2,
        ),
        train_dataset=make_tiny_vlm_dataset(n=4),
        eval_dataset=make_tiny_vlm_dataset(n=2, seed=5),
        processing_class=student[1],
        teacher_processing_class=teacher[1],
    )
    trainer.train()
    trainer.push_to_hub(dataset_name="PULSE-ECG/ECGInstruct")
    local_card = build_model_card(trainer, "x", dataset_name=str(tmp_path / "train.json")).data.to_dict()

    assert sent["repo_id"] == "me/qwen3vl-ecg-evl"
    files = sent["files"]
    assert "model.safetensors" in files and "config.json" in files and "README.md" in files
    assert "processor_config.json" in files or "preprocessor_config.json" in files
    assert "tokenizer_config.json" in files or "tokenizer.json" in files
    assert not any("aligner" in f or f.startswith("checkpoint-") for f in files), files
    card = sent["card"]
    for needle in (
        "Qwen/Qwen3-VL-2B-Instruct",
        "base_model: Qwen/Qwen3-VL-2B-Instruct",
        "PULSE-ECG/PULSE-7B",
        "abc1234",
        "`evl`",
        "alpha=0.3",
        "lambda_ot=0.1",
        "PULSE-ECG/ECGInstruct",
        "evl-kd",
        "knowledge-distillation",
        "eval_loss",
        "eval_ot_loss",
        "mhca_reduction=mean",
    ):
        assert needle in card, needle
    assert "- PULSE-ECG/ECGInstruct" in card  # the card's datasets metadata links Hub datasets
    assert "datasets" not in local_card  # a local training file is named in the text only


def test_drop_in_replacement_of_an_sft_script(tmp_path):
    """An existing SFT script: swap the class and add `teacher_model=`; everything else is unchanged."""
    student, teacher = build_tiny_qwen3_vl(seed=0), build_tiny_llava_next(seed=1)
    dataset = make_tiny_vlm_dataset(n=8)
    training_args = SFTConfig(output_dir=str(tmp_path / "out"), max_steps=2, **COMMON)

    # before: trainer = SFTTrainer(model=..., args=training_args, train_dataset=..., processing_class=...)
    assert SFTTrainer is not EVLDistillTrainer
    trainer = EVLDistillTrainer(
        model=student[0],
        args=training_args,
        train_dataset=dataset,
        processing_class=student[1],
        teacher_model=teacher[0],
        teacher_processing_class=teacher[1],
    )
    trainer.train()
    logs = step_logs(trainer)
    assert len(logs) == 2
    assert trainer.args.max_steps == 2 and trainer.args.learning_rate == COMMON["learning_rate"]
    assert trainer.args.alpha == pytest.approx(0.3) and trainer.args.lambda_rel == pytest.approx(0.03)
    assert all({"ce_loss", "mhca_loss", "rel_loss", "ot_loss"} <= set(e) for e in logs)
