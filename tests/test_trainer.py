"""EVLDistillTrainer on tiny offline models: real training steps, numbers asserted."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText
from trl import SFTConfig, SFTTrainer

from evl_kd_trainer.data.collator import DualViewCollator
from evl_kd_trainer.testing import build_tiny_llava_next, build_tiny_qwen3_vl, make_tiny_vlm_dataset
from evl_kd_trainer.trainer import ALIGNER_WEIGHTS_NAME, EVLDistillConfig, EVLDistillTrainer

COMMON = dict(
    per_device_train_batch_size=2,
    bf16=False,
    gradient_checkpointing=False,
    use_cpu=True,
    report_to="none",
    logging_steps=1,
    save_strategy="no",
    learning_rate=1e-3,
    seed=0,
    disable_tqdm=True,
)


def make_args(tmp_path, **overrides) -> EVLDistillConfig:
    values = {"output_dir": str(tmp_path / "out"), "max_steps": 3, **COMMON, **overrides}
    return EVLDistillConfig(**values)


def make_trainer(tmp_path, dataset=None, student=None, teacher=None, **overrides) -> EVLDistillTrainer:
    student = student or build_tiny_qwen3_vl(seed=0)
    teacher = teacher or build_tiny_llava_next(seed=1)
    return EVLDistillTrainer(
        student[0],
        teacher_model=teacher[0],
        args=make_args(tmp_path, **overrides),
        train_dataset=dataset if dataset is not None else make_tiny_vlm_dataset(n=8, seed=0),
        processing_class=student[1],
        teacher_processing_class=teacher[1],
    )


def step_logs(trainer) -> list[dict]:
    return [entry for entry in trainer.state.log_history if "loss" in entry and "ce_loss" in entry]


def test_logged_total_is_the_weighted_sum_of_logged_terms(tmp_path):
    trainer = make_trainer(tmp_path, alpha=0.4, lambda_mhca=0.7, lambda_rel=0.05, lambda_ot=0.3)
    trainer.train()
    logs = step_logs(trainer)
    assert len(logs) == 3
    for entry in logs:
        kd = 0.7 * entry["mhca_loss"] + 0.05 * entry["rel_loss"] + 0.3 * entry["ot_loss"]
        expected = 0.6 * entry["ce_loss"] + 0.4 * kd
        assert entry["loss"] == pytest.approx(expected, rel=1e-5)
        assert entry["mhca_loss"] > 0 and entry["rel_loss"] > 0 and entry["ot_loss"] > 0


def test_teacher_frozen_and_headless_student_and_aligners_learn(tmp_path):
    student, teacher = build_tiny_qwen3_vl(seed=0), build_tiny_llava_next(seed=1)
    teacher_before = {k: v.clone() for k, v in teacher[0].state_dict().items()}
    student_before = {k: v.clone() for k, v in student[0].state_dict().items()}
    head_calls = []
    teacher[0].lm_head.register_forward_hook(lambda *a: head_calls.append(1))
    trainer = make_trainer(tmp_path, student=student, teacher=teacher)
    aligner_before = {k: v.clone() for k, v in trainer.kd_method.state_dict().items()}
    trainer.train()

    assert head_calls == [], "the teacher's LM head ran"
    for key, value in teacher[0].state_dict().items():
        assert torch.equal(value, teacher_before[key]), key
    assert not any(p.requires_grad for p in teacher[0].parameters())
    assert not teacher[0].training
    changed = [
        k for k, v in student[0].state_dict().items() if k in student_before and not torch.equal(v, student_before[k])
    ]
    assert any("language_model" in k for k in changed) and any("visual" in k for k in changed)
    for name in ("aligner.q_proj.weight", "aligner.k_proj.weight", "visual_projector.proj.weight"):
        assert not torch.equal(trainer.kd_method.state_dict()[name], aligner_before[name]), name


def test_aligners_and_the_students_projector_get_their_own_learning_rates(tmp_path):
    trainer = make_trainer(
        tmp_path, learning_rate=1e-3, aligner_learning_rate=7e-3, projector_learning_rate=3e-3, max_steps=1
    )
    trainer.create_optimizer()
    kd_ids = {id(p) for p in trainer.kd_method.parameters()}
    from evl_kd_trainer.trainer.optim import PROJECTOR_NAME_PATTERNS

    merger_ids = {id(p) for n, p in trainer.model.named_parameters() if any(k in n for k in PROJECTOR_NAME_PATTERNS)}
    assert len(merger_ids) > 6  # Qwen3-VL's merger and its deepstack mergers
    for group in trainer.optimizer.param_groups:
        kinds = {"kd" if id(p) in kd_ids else "merger" if id(p) in merger_ids else "rest" for p in group["params"]}
        assert len(kinds) == 1
        assert group["lr"] == {"kd": 7e-3, "merger": 3e-3, "rest": 1e-3}[kinds.pop()]
    n_opt = sum(len(g["params"]) for g in trainer.optimizer.param_groups)
    assert n_opt == sum(1 for p in trainer.model.parameters() if p.requires_grad)


def test_aligner_group_keeps_the_users_optimizer_class(tmp_path):
    """`optimizer_cls_and_kwargs` (and everything else Trainer.create_optimizer honours) still applies."""
    student, teacher = build_tiny_qwen3_vl(seed=0), build_tiny_llava_next(seed=1)
    trainer = EVLDistillTrainer(
        student[0],
        teacher_model=teacher[0],
        args=make_args(tmp_path, learning_rate=1e-3, aligner_learning_rate=7e-3, weight_decay=0.1, max_steps=1),
        train_dataset=make_tiny_vlm_dataset(n=4, seed=0),
        processing_class=student[1],
        teacher_processing_class=teacher[1],
        optimizer_cls_and_kwargs=(torch.optim.SGD, {"lr": 1e-3, "momentum": 0.9}),
    )
    optimizer = trainer.create_optimizer()
    assert isinstance(optimizer, torch.optim.SGD)
    kd_ids = {id(p) for p in trainer.kd_method.parameters()}
    kd_groups = [g for g in optimizer.param_groups if any(id(p) in kd_ids for p in g["params"])]
    assert {g["lr"] for g in kd_groups} == {7e-3} and all(g["momentum"] == 0.9 for g in kd_groups)
    assert {g["weight_decay"] for g in kd_groups} == {0.0, 0.1}  # biases undecayed, as Trainer decides
    assert all(all(id(p) in kd_ids for p in g["params"]) for g in kd_groups)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == sum(
        1 for p in trainer.model.parameters() if p.requires_grad
    )


def test_aligner_group_when_the_optimizer_selects_its_own_parameters(tmp_path):
    """GaLore-style optimizers hand Trainer their own `params`, chosen without looking at requires_grad: the
    aligners must then leave those groups, not appear twice."""
    student, teacher = build_tiny_qwen3_vl(seed=0), build_tiny_llava_next(seed=1)
    args = make_args(tmp_path, aligner_learning_rate=7e-3, max_steps=1)
    trainer = EVLDistillTrainer(
        student[0], teacher_model=teacher[0], args=args, train_dataset=make_tiny_vlm_dataset(n=4, seed=0),
        processing_class=student[1], teacher_processing_class=teacher[1],
    )  # fmt: skip
    everything = list(trainer.model.parameters())  # aligners included, as GaLore's target selection would
    trainer.optimizer_cls_and_kwargs = (torch.optim.AdamW, {"params": [{"params": everything}], "lr": 1e-3})
    optimizer = trainer.create_optimizer()
    ids = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert len(ids) == len(set(ids)) == len({id(p) for p in everything if p.requires_grad})
    kd_ids = {id(p) for p in trainer.kd_method.parameters()}
    assert all(g["lr"] == 7e-3 for g in optimizer.param_groups if any(id(p) in kd_ids for p in g["params"]))
    trainer.train()  # and it steps

    layerwise = make_trainer(tmp_path / "lw", optim="adamw_torch", max_steps=1)
    layerwise.args.optim = "galore_adamw_layerwise"
    with pytest.raises(ValueError, match="galore_adamw_layerwise.*own learning rate"):
        layerwise.create_optimizer()


def test_alpha_zero_reproduces_sft_exactly(tmp_path):
    dataset = make_tiny_vlm_dataset(n=8, seed=0)
    student_sft = build_tiny_qwen3_vl(seed=0)
    sft_args = SFTConfig(output_dir=str(tmp_path / "sft"), max_steps=3, **COMMON)
    sft = SFTTrainer(
        student_sft[0],
        args=sft_args,
        train_dataset=dataset,
        processing_class=student_sft[1],
        data_collator=DualViewCollator(student_sft[1]),
    )
    sft.train()
    evl = make_trainer(tmp_path, dataset=dataset, alpha=0.0)
    evl.train()
    sft_losses = [e["loss"] for e in sft.state.log_history if "loss" in e]
    evl_losses = [e["loss"] for e in evl.state.log_history if "loss" in e]
    assert len(sft_losses) == 3
    assert evl_losses == sft_losses
    # an inactive method still logs `ce_loss` (the demo's SFT control plots beside the distilled run)
    assert [e["ce_loss"] for e in evl.state.log_history if "loss" in e] == pytest.approx(evl_losses, rel=1e-6)
    assert evl.teacher_model is None  # never placed, never run
    sft_state = sft.model.state_dict()
    for key, value in evl.model.state_dict().items():
        assert torch.equal(value, sft_state[key]), key


def test_kd_terms_keep_their_gradients_when_sft_runs_a_second_metrics_forward(tmp_path):
    """Label smoothing (like `compute_loss_func`) makes SFTTrainer run the student twice, the second time under
    no_grad: the terms of the first forward must be the ones trained, once per step."""
    trainer = make_trainer(tmp_path, label_smoothing_factor=0.1, loss_type="nll", max_steps=2)
    method_calls = []
    trainer.kd_method.register_forward_hook(lambda *a: method_calls.append(torch.is_grad_enabled()))
    aligner_before = {k: v.clone() for k, v in trainer.kd_method.state_dict().items()}
    trainer.train()
    assert method_calls == [True, True]
    for name in ("aligner.q_proj.weight", "visual_projector.proj.weight"):
        assert not torch.equal(trainer.kd_method.state_dict()[name], aligner_before[name]), name
    for entry in step_logs(trainer):
        kd = entry["mhca_loss"] + 0.03 * entry["rel_loss"] + 0.1 * entry["ot_loss"]
        assert entry["loss"] == pytest.approx(0.7 * entry["ce_loss"] + 0.3 * kd, rel=1e-5)


@pytest.mark.parametrize("settings", [{"alpha": 0.0}, {"lambda_mhca": 0.0, "lambda_rel": 0.0, "lambda_ot": 0.0}])
def test_inactive_method_never_loads_the_teacher_or_renders_its_view(tmp_path, settings):
    student = build_tiny_qwen3_vl(seed=0)
    trainer = EVLDistillTrainer(
        student[0],
        teacher_model=str(tmp_path / "no-such-teacher"),  # would fail to load
        args=make_args(tmp_path, max_steps=1, **settings),
        train_dataset=make_tiny_vlm_dataset(n=4, seed=0),
        processing_class=student[1],
    )
    assert trainer.teacher_model is None and not trainer.kd_method.is_active()
    batch = trainer.data_collator([trainer.train_dataset[0]])
    assert not any(key.startswith("teacher_") for key in batch)
    trainer.train()
    assert all("mhca_loss" not in e for e in trainer.state.log_history)


def test_samples_the_collator_drops_are_counted_in_the_logs(tmp_path):
    student, teacher = build_tiny_qwen3_vl(seed=0), build_tiny_llava_next(seed=1)
    dataset = make_tiny_vlm_dataset(n=8, seed=0)
    unlimited = DualViewCollator(student[1], teacher_processor=teacher[1])
    lengths = sorted(int(unlimited([row])["teacher_attention_mask"].sum()) for row in dataset)
    limit = lengths[5]  # the two longest teacher views cannot fit
    trainer = make_trainer(
        tmp_path, dataset=dataset, student=student, teacher=teacher, teacher_max_length=limit,
        per_device_train_batch_size=8, max_steps=1,
    )  # fmt: skip
    trainer.train()
    stats = trainer.data_collator.stats
    assert stats["dropped"] + stats.get("teacher_truncated", 0) >= 2
    logged = step_logs(trainer)[-1]
    assert logged["collator_dropped"] == stats["dropped"] and logged["collator_truncated"] == stats["truncated"]


def test_zero_weight_skips_its_term(tmp_path):
    trainer = make_trainer(tmp_path, lambda_ot=0.0, max_steps=2)
    assert trainer.kd_method.visual_projector is None and not trainer.kd_request.visual
    trainer.train()
    logs = step_logs(trainer)
    assert all("ot_loss" not in e and "mhca_loss" in e for e in logs)

    only_ot = make_trainer(tmp_path, lambda_mhca=0.0, lambda_rel=0.0, max_steps=2)
    assert only_ot.kd_method.aligner is None
    only_ot.train()
    logs = step_logs(only_ot)
    assert all(set(e) >= {"ot_loss", "ce_loss"} and "mhca_loss" not in e and "rel_loss" not in e for e in logs)
    for entry in logs:
        assert entry["loss"] == pytest.approx(0.7 * entry["ce_loss"] + 0.3 * 0.1 * entry["ot_loss"], rel=1e-5)


def test_resume_gives_the_losses_of_an_uninterrupted_run(tmp_path):
    uninterrupted = make_trainer(tmp_path / "a", max_steps=4, save_strategy="steps", save_steps=2)
    uninterrupted.train()
    checkpoint = tmp_path / "a" / "out" / "checkpoint-2"
    assert (checkpoint / ALIGNER_WEIGHTS_NAME).is_file()
    assert not any("kd_method" in k for k in load_file(str(checkpoint / "model.safetensors")))

    resumed = make_trainer(tmp_path / "b", max_steps=4, save_strategy="steps", save_steps=2)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    full = {e["step"]: e for e in step_logs(uninterrupted)}
    after = {e["step"]: e for e in step_logs(resumed)}
    assert sorted(after) == [1, 2, 3, 4]  # steps 1-2 come from the checkpoint's trainer state
    for step in (3, 4):
        for key in ("loss", "ce_loss", "mhca_loss", "rel_loss", "ot_loss"):
            assert after[step][key] == pytest.approx(full[step][key], rel=1e-5), (step, key)
    for key, value in uninterrupted.kd_method.state_dict().items():
        torch.testing.assert_close(resumed.kd_method.state_dict()[key], value)


def test_saved_student_loads_in_plain_transformers_without_aligner_keys(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=1)
    trainer.train()
    out = tmp_path / "saved"
    trainer.save_model(str(out))
    weights = load_file(str(out / "model.safetensors"))
    assert weights and not any("kd_method" in k or "aligner" in k for k in weights)
    aligner = load_file(str(out / ALIGNER_WEIGHTS_NAME))
    assert set(aligner) == set(trainer.kd_method.state_dict())
    reloaded = AutoModelForImageTextToText.from_pretrained(str(out))
    assert type(reloaded).__name__ == "Qwen3VLForConditionalGeneration"
    student_state = {k: v for k, v in trainer.model.state_dict().items() if "kd_method" not in k}
    reloaded_state = reloaded.state_dict()
    assert set(reloaded_state) == set(student_state)
    for key, value in student_state.items():
        assert torch.equal(reloaded_state[key], value), key


def test_batches_with_text_only_samples_train(tmp_path):
    with_images = make_tiny_vlm_dataset(n=4, seed=0)
    rows = [with_images[i] for i in range(4)]
    text_only = [
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "What is a normal heart rate?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "60 to 100 bpm"}]},
            ],
            "images": [],
        }
    ] * 4
    mixed = Dataset.from_list([rows[0], text_only[0], rows[1], text_only[1], text_only[2], text_only[3]])
    trainer = make_trainer(tmp_path, dataset=mixed, max_steps=3)
    trainer.train()
    logs = step_logs(trainer)
    assert len(logs) == 3
    assert all(math.isfinite(e["ot_loss"]) for e in logs)
    # step 3 holds two text-only samples: no visual tokens, so OT contributes exactly 0
    assert logs[2]["ot_loss"] == 0.0


def test_nonfinite_term_names_step_and_term(tmp_path):
    teacher = build_tiny_llava_next(seed=1)
    with torch.no_grad():
        teacher[0].model.multi_modal_projector.linear_2.weight.fill_(float("nan"))
    trainer = make_trainer(tmp_path / "err", teacher=teacher, max_steps=2)
    with pytest.raises(FloatingPointError, match=r"global step 0: .*ot_loss=nan"):
        trainer.train()


def test_nonfinite_step_is_skipped_whole_and_counted(tmp_path):
    """Step 2 of 3 gets a NaN teacher: its update is dropped entirely (no weight decay, no Adam step), the others
    train, and the skip is counted."""
    from transformers import TrainerCallback

    teacher = build_tiny_llava_next(seed=1)
    calls = []

    def poison_second_call(module, inputs, output):
        calls.append(1)
        return output * float("nan") if len(calls) == 2 else output

    teacher[0].model.multi_modal_projector.register_forward_hook(poison_second_call)
    student = build_tiny_qwen3_vl(seed=0)
    snapshots = []

    class Snapshot(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            snapshots.append({k: v.detach().clone() for k, v in student[0].state_dict().items()})

    trainer = make_trainer(
        tmp_path, student=student, teacher=teacher, nonfinite_kd_action="skip", max_steps=3, weight_decay=0.1
    )
    trainer.add_callback(Snapshot())
    trainer.train()
    assert len(calls) == 3 and len(snapshots) == 3
    assert trainer.skipped_nonfinite_steps == 1
    assert step_logs(trainer)[-1]["skipped_nonfinite_steps"] == 1
    for key, value in snapshots[1].items():
        assert torch.equal(value, snapshots[0][key]), f"{key} changed in the skipped step"
    assert any(not torch.equal(v, snapshots[1][k]) for k, v in snapshots[2].items()), "step 3 did not train"
    adam_steps = {float(state["step"]) for state in trainer.optimizer.optimizer.state.values()}
    assert adam_steps == {2.0}, "the skipped update must not advance the optimizer state"


def test_skip_is_refused_where_an_update_cannot_be_dropped(tmp_path):
    with pytest.raises(ValueError, match="fp16 loss scaling"):
        make_args(tmp_path, nonfinite_kd_action="skip", fp16=True, use_cpu=False)
    with pytest.raises(ValueError, match="DeepSpeed"):
        make_args(tmp_path, nonfinite_kd_action="skip", deepspeed={"zero_optimization": {"stage": 2}})


def test_nonfinite_term_in_evaluation_does_not_touch_the_next_update(tmp_path):
    """Under "skip", a NaN met while evaluating is reported, not turned into a skipped training update."""
    teacher = build_tiny_llava_next(seed=1)
    trainer = make_trainer(tmp_path, teacher=teacher, nonfinite_kd_action="skip", max_steps=1)
    trainer.eval_dataset = make_tiny_vlm_dataset(n=2, seed=3)
    handle = teacher[0].model.multi_modal_projector.register_forward_hook(lambda m, i, o: o * float("nan"))
    metrics = trainer.evaluate()
    handle.remove()
    assert math.isnan(metrics["eval_loss"])  # reported, not hidden
    assert trainer.skipped_nonfinite_steps == 0 and not trainer._skip_update


def test_unsupported_models_and_mismatched_processors_fail_clearly(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    text_only = LlamaForCausalLM(
        LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            vocab_size=400,
        )
    )
    student, teacher = build_tiny_qwen3_vl(seed=0), build_tiny_llava_next(seed=1)
    with pytest.raises(ValueError, match=r"llama.*(qwen3_vl|llava_next)|(qwen3_vl|llava_next).*llama"):
        make_trainer(tmp_path, teacher=(text_only, teacher[1]))
    with pytest.raises(ValueError, match="student processor"):
        EVLDistillTrainer(
            student[0],
            teacher_model=teacher[0],
            args=make_args(tmp_path),
            train_dataset=make_tiny_vlm_dataset(n=2),
            processing_class=teacher[1],
            teacher_processing_class=teacher[1],
        )
    with pytest.raises(ValueError, match="needs a teacher"):
        EVLDistillTrainer(
            student[0], args=make_args(tmp_path), train_dataset=make_tiny_vlm_dataset(n=2), processing_class=student[1]
        )
    # a flat (PULSE) checkpoint in transformers' stock class, or with the stock processor, would change the teacher
    stock = build_tiny_llava_next(seed=1)
    stock[0].config.mm_patch_merge_type = "flat"
    with pytest.raises(ValueError, match="mm_patch_merge_type='flat'.*load_model"):
        make_trainer(tmp_path, teacher=stock)
    from evl_kd_trainer.demo.models import build_demo_teacher

    flat_model, _ = build_demo_teacher()
    with pytest.raises(ValueError, match="packs visual tokens 'flat' but its processor is a LlavaNextProcessor"):
        make_trainer(tmp_path, teacher=(flat_model, build_tiny_llava_next(seed=1)[1]))
    with pytest.raises(ValueError, match="Known KD methods: .*evl"):
        make_args(tmp_path, kd_method="evl-typo")
    with pytest.raises(ValueError, match="alpha"):
        make_args(tmp_path, alpha=1.5)


def _wider_qwen3_vl():
    return build_tiny_qwen3_vl(
        seed=2,
        text_config={"hidden_size": 96, "intermediate_size": 192, "num_attention_heads": 4, "head_dim": 24,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 4, 4]}},
    )  # fmt: skip


@pytest.mark.parametrize(
    ("student_builder", "teacher_builder"),
    [
        pytest.param("build_tiny_qwen2_5_vl", "build_tiny_llava_next", id="qwen2.5-vl<-llava-next"),
        pytest.param("build_tiny_qwen2_vl", "build_tiny_llava", id="qwen2-vl<-llava-1.5"),
        pytest.param("build_tiny_qwen3_vl", "wider_qwen3_vl", id="qwen3-vl<-qwen3-vl (same family)"),
    ],
)
def test_every_supported_pair_trains_with_all_three_terms(tmp_path, student_builder, teacher_builder):
    import evl_kd_trainer.testing as testing

    student = getattr(testing, student_builder)(seed=0)
    teacher = _wider_qwen3_vl() if teacher_builder == "wider_qwen3_vl" else getattr(testing, teacher_builder)(seed=1)
    trainer = make_trainer(tmp_path, student=student, teacher=teacher, max_steps=2)
    before = {k: v.clone() for k, v in trainer.kd_method.state_dict().items()}
    trainer.train()
    logs = step_logs(trainer)
    assert len(logs) == 2
    for entry in logs:
        assert all(math.isfinite(entry[k]) and entry[k] > 0 for k in ("ce_loss", "mhca_loss", "rel_loss", "ot_loss"))
    assert all(not torch.equal(v, before[k]) for k, v in trainer.kd_method.state_dict().items() if k.endswith("weight"))
