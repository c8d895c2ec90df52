"""Training from a teacher cache (`teacher_cache_dir`) against training with the live teacher (issue 13, item 5).

With a lossless (fp32) cache, the same data, seed and starting weights give the same per-term losses and the same
gradients, step by step, for every method that reads a teacher; the teacher is never run. With fp8 / PCA caches the
per-term error is bounded.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from transformers import TrainerCallback

from evl_kd_trainer.cache import build_teacher_cache
from evl_kd_trainer.methods import builtin_method_names, get_method
from evl_kd_trainer.testing.method_args import method_args
from evl_kd_trainer.trainer import EVLDistillTrainer
from tests.teacher_cache_helpers import make_args, tiny_world

TEACHER_METHODS = [m for m in builtin_method_names() if get_method(m).request(method_args(kd_method=m)).teacher]
STEPS = 3
TRAIN = dict(max_steps=STEPS, per_device_train_batch_size=2, logging_steps=1, learning_rate=1e-3, seed=3)


class GradientRecorder(TrainerCallback):
    """Every trainable parameter's gradient right before each optimizer step."""

    def __init__(self) -> None:
        self.model: torch.nn.Module | None = None
        self.steps: list[dict[str, torch.Tensor]] = []

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.steps.append({n: p.grad.detach().clone() for n, p in self.model.named_parameters() if p.grad is not None})


@pytest.fixture(scope="module")
def world():
    return tiny_world(n=8)


def _train(world, tmp_path, name, method, cache_dir=None, peft_config=None, resume=None, **overrides):
    settings = {**TRAIN, **overrides}
    args = make_args(tmp_path / name, kd_method=method, teacher_cache_dir=cache_dir, **settings)
    student = copy.deepcopy(world["student"])
    recorder = GradientRecorder()
    torch.manual_seed(0)  # the method's modules start from the same weights in both runs
    trainer = EVLDistillTrainer(
        student,
        teacher_model=world["teacher"],
        args=args,
        train_dataset=world["dataset"],
        processing_class=world["student_processor"],
        teacher_processing_class=world["teacher_processor"],
        callbacks=[recorder],
        peft_config=peft_config,
    )
    recorder.model = trainer.model
    calls = []
    hook = world["teacher"].model.register_forward_pre_hook(lambda *a: calls.append(1))  # the base model runs
    try:
        trainer.train(resume_from_checkpoint=resume)
    finally:
        hook.remove()
    logs = [e for e in trainer.state.log_history if "ce_loss" in e]
    return trainer, logs, recorder.steps, len(calls)


def _build(world, tmp_path, method, compression="fp32", batch_size=2, **overrides):
    args = make_args(tmp_path / "build", kd_method=method, **overrides)
    out = tmp_path / f"cache-{compression.replace(':', '')}"
    build_teacher_cache(
        out, world["dataset"], world["teacher"], world["teacher_processor"], args,
        student_processor=world["student_processor"], compression=compression, batch_size=batch_size, progress=False,
    )  # fmt: skip
    return str(out)


@pytest.mark.parametrize("method", TEACHER_METHODS)
def test_lossless_cache_gives_the_live_teachers_losses_and_gradients(world, tmp_path, method):
    # EM-KD matches vision tokens by the Hungarian algorithm: the ~1e-7 a teacher kernel moves with the batch's padding
    # can flip a match, so it is compared one record per batch (build and run), where the states are bit-identical.
    batch = {"per_device_train_batch_size": 1} if method == "emkd" else {}
    cache = _build(world, tmp_path, method, batch_size=1 if batch else 2)
    _, live_logs, live_grads, live_calls = _train(world, tmp_path, "live", method, **batch)
    trainer, cached_logs, cached_grads, cached_calls = _train(
        world, tmp_path, "cached", method, cache_dir=cache, **batch
    )
    assert live_calls > 0 and cached_calls == 0  # the cached run never runs the teacher
    assert trainer.teacher_model is None and trainer.teacher_cache is not None
    terms = {"ce_loss", "loss", *get_method(method).terms} & set(live_logs[0])
    assert len(live_logs) == len(cached_logs) == STEPS and len(terms) >= 3
    for live, cached in zip(live_logs, cached_logs, strict=True):
        for term in terms:
            assert math.isfinite(live[term])
            assert cached[term] == pytest.approx(live[term], rel=1e-5, abs=1e-5), (term, live[term], cached[term])
    assert len(live_grads) == len(cached_grads) == STEPS
    for live, cached in zip(live_grads, cached_grads, strict=True):
        assert set(live) == set(cached) and any("kd_method" in n for n in live) == bool(
            list(trainer.kd_method.parameters())
        )
        for name in live:
            torch.testing.assert_close(cached[name], live[name], rtol=1e-5, atol=1e-5, msg=name)


@pytest.mark.parametrize(("compression", "bound"), [("fp8", 0.05), ("pca:16", 0.25)])
def test_compressed_caches_bound_the_per_term_error(world, tmp_path, compression, bound):
    """EVL-ECG's terms from an fp8 / PCA cache, relative to the live teacher's (first step, same batch)."""
    cache = _build(world, tmp_path, "evl", compression=compression)
    _, live_logs, _, _ = _train(world, tmp_path, "live", "evl", max_steps=1)
    _, cached_logs, _, _ = _train(world, tmp_path, "cached", "evl", cache_dir=cache, max_steps=1)
    for term in ("mhca_loss", "rel_loss", "ot_loss"):
        live, cached = live_logs[0][term], cached_logs[0][term]
        assert abs(cached - live) <= bound * abs(live), (compression, term, live, cached)


def test_cache_of_other_settings_or_records_is_refused_before_training(world, tmp_path):
    cache = _build(world, tmp_path, "evl")
    with pytest.raises(ValueError, match="teacher_max_length"):
        _train(world, tmp_path, "other", "evl", cache_dir=cache, teacher_max_length=64)
    smaller = dict(world, dataset=world["dataset"].select(range(4)))
    cache_small = _build(smaller, tmp_path / "small", "evl")
    with pytest.raises(ValueError, match=r"not in the cache: 'rec-4'"):
        _train(world, tmp_path, "missing", "evl", cache_dir=cache_small)


def test_model_card_says_the_run_used_a_cache(world, tmp_path):
    cache = _build(world, tmp_path, "uld")
    trainer, _, _, _ = _train(world, tmp_path, "cached", "uld", cache_dir=cache, max_steps=1)
    trainer.save_model()
    trainer.create_model_card()
    card = (tmp_path / "cached" / "run" / "README.md").read_text()
    fingerprint = json.loads((tmp_path / "cache-fp32" / "manifest.json").read_text())["fingerprint"]
    assert "read from a cache" in card and fingerprint["teacher_weights"][:16] in card


def test_gradient_accumulation_and_lora_from_the_cache_follow_the_live_run(world, tmp_path):
    from peft import LoraConfig

    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    settings = {"gradient_accumulation_steps": 2, "max_steps": 2}
    cache = _build(world, tmp_path, "evl")
    _, live_logs, live_grads, _ = _train(world, tmp_path, "live", "evl", peft_config=lora, **settings)
    _, cached_logs, cached_grads, calls = _train(world, tmp_path, "cached", "evl", cache, peft_config=lora, **settings)
    assert calls == 0 and len(live_logs) == len(cached_logs) == 2
    for live, cached in zip(live_logs, cached_logs, strict=True):
        for term in ("loss", "ce_loss", "mhca_loss", "rel_loss", "ot_loss"):
            assert cached[term] == pytest.approx(live[term], rel=1e-5, abs=1e-5), term
    assert any("lora" in name for name in cached_grads[0]) and any("kd_method" in name for name in cached_grads[0])
    for live, cached in zip(live_grads, cached_grads, strict=True):
        for name in live:
            torch.testing.assert_close(cached[name], live[name], rtol=1e-5, atol=1e-5, msg=name)


def test_resume_from_the_cache_gives_the_uninterrupted_losses(world, tmp_path):
    cache = _build(world, tmp_path, "evl")
    saving = {"max_steps": 4, "save_strategy": "steps", "save_steps": 2}
    _, full_logs, _, _ = _train(world, tmp_path, "full", "evl", cache, **saving)
    checkpoint = tmp_path / "full" / "run" / "checkpoint-2"
    _, resumed_logs, _, _ = _train(world, tmp_path, "resumed", "evl", cache, resume=str(checkpoint), **saving)
    full = {e["step"]: e for e in full_logs}
    resumed = {e["step"]: e for e in resumed_logs}
    for step in (3, 4):
        for term in ("loss", "ce_loss", "mhca_loss", "rel_loss", "ot_loss"):
            assert resumed[step][term] == pytest.approx(full[step][term], rel=1e-5), (step, term)
