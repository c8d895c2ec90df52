"""Resume: checkpoints appear only complete, `resume_from_checkpoint=True` takes the newest complete one, and a
checkpoint missing its optimizer, scheduler or aligner file is refused by name unless `allow_partial_resume`."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from evl_kd_trainer.testing import build_tiny_llava_next, build_tiny_qwen3_vl, make_tiny_vlm_dataset
from evl_kd_trainer.trainer import ALIGNER_WEIGHTS_NAME, EVLDistillTrainer
from evl_kd_trainer.trainer.checkpoints import parse_resume_argument
from tests.test_examples import CPU, DISTILL_CPU, ROOT, models_and_data, run_example, workspace  # noqa: F401
from tests.test_trainer import make_args, make_trainer, step_logs

WORKER = Path(__file__).with_name("kill_during_save_worker.py")
SAVING = {"save_strategy": "steps", "save_steps": 2}


class WatchedSave(EVLDistillTrainer):
    """Records what `output_dir` shows while a checkpoint is being written (after the weights and optimizer)."""

    seen: list[tuple[int, list[str]]]

    def _save_rng_state(self, output_dir: str) -> None:
        self.seen.append((self.state.global_step, sorted(os.listdir(self.args.output_dir))))
        super()._save_rng_state(output_dir)


@pytest.fixture(scope="module")
def watched(tmp_path_factory) -> SimpleNamespace:
    """A 4-step run with checkpoints 2 and 4, and what its output_dir showed while each was being saved."""
    root = tmp_path_factory.mktemp("run")
    student, teacher = build_tiny_qwen3_vl(seed=0), build_tiny_llava_next(seed=1)
    trainer = WatchedSave(
        student[0],
        teacher_model=teacher[0],
        args=make_args(root, max_steps=4, **SAVING),
        train_dataset=make_tiny_vlm_dataset(n=8, seed=0),
        processing_class=student[1],
        teacher_processing_class=teacher[1],
    )
    trainer.seen = []
    trainer.train()
    return SimpleNamespace(out=root / "out", seen=trainer.seen)


@pytest.fixture
def run(watched) -> Path:
    return watched.out


def test_a_checkpoint_is_visible_only_once_complete(watched, run):
    seen = watched.seen
    assert [step for step, _ in seen] == [2, 4]
    # while checkpoint-4 is written, only its `_tmp-` folder exists (no reader treats it as a checkpoint)
    assert seen[1][1] == ["README.md", "_tmp-checkpoint-4", "checkpoint-2"]
    assert sorted(os.listdir(run)) == ["README.md", "checkpoint-2", "checkpoint-4"]
    for name in ("trainer_state.json", "optimizer.pt", "scheduler.pt", "rng_state.pth", ALIGNER_WEIGHTS_NAME):
        assert (run / "checkpoint-4" / name).is_file(), name


def test_the_best_checkpoint_is_recorded_at_its_final_place(tmp_path):
    """`load_best_model_at_end` and rotation see the renamed folders, never the `_tmp-` ones."""
    student, teacher = build_tiny_qwen3_vl(seed=0), build_tiny_llava_next(seed=1)
    best_of = {"eval_strategy": "steps", "eval_steps": 2, "load_best_model_at_end": True, "save_total_limit": 1}
    trainer = EVLDistillTrainer(
        student[0],
        teacher_model=teacher[0],
        args=make_args(tmp_path, max_steps=4, **SAVING, **best_of, metric_for_best_model="eval_loss"),
        train_dataset=make_tiny_vlm_dataset(n=8, seed=0),
        eval_dataset=make_tiny_vlm_dataset(n=2, seed=3),
        processing_class=student[1],
        teacher_processing_class=teacher[1],
    )
    trainer.train()
    out = tmp_path / "out"
    best = trainer.state.best_model_checkpoint
    assert best in (str(out / "checkpoint-2"), str(out / "checkpoint-4")) and os.path.isdir(best)
    assert not [name for name in os.listdir(out) if name.startswith("_tmp-")]
    kept = sorted(name for name in os.listdir(out) if name.startswith("checkpoint-"))
    assert kept == sorted({"checkpoint-4", os.path.basename(best)})  # the limit keeps the newest and the best
    for name in kept:
        recorded = json.loads((out / name / "trainer_state.json").read_text())["best_model_checkpoint"]
        assert recorded in (str(out / "checkpoint-2"), str(out / "checkpoint-4")), recorded


def copy_run(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "out"
    shutil.copytree(run, target)
    return target


def test_resume_true_takes_the_newest_complete_checkpoint(run, tmp_path, caplog):
    out = copy_run(run, tmp_path)
    # what a save killed before this change left: a folder holding only config.json
    (out / "checkpoint-6").mkdir()
    shutil.copy(out / "checkpoint-4" / "config.json", out / "checkpoint-6")
    # and what a killed save leaves now
    (out / "_tmp-checkpoint-8" / "checkpoint-8").mkdir(parents=True)
    trainer = make_trainer(tmp_path, max_steps=6, **SAVING)
    with caplog.at_level(logging.WARNING):
        trainer.train(resume_from_checkpoint=True)
    assert (
        "checkpoint-6 (missing trainer_state.json" in caplog.text and "checkpoint-4, the newest complete" in caplog.text
    )
    assert [e["step"] for e in step_logs(trainer)] == [1, 2, 3, 4, 5, 6]  # 1-4 from checkpoint-4's state
    assert not (out / "_tmp-checkpoint-8").exists()
    state = json.loads((out / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6  # the stale folder was replaced whole by a complete checkpoint
    assert (out / "checkpoint-6" / "optimizer.pt").is_file()


@pytest.mark.parametrize("missing", ["optimizer.pt", "scheduler.pt", ALIGNER_WEIGHTS_NAME])
def test_a_checkpoint_missing_its_state_is_refused_by_name(run, tmp_path, missing):
    out = copy_run(run, tmp_path)
    shutil.rmtree(out / "checkpoint-4")
    (out / "checkpoint-2" / missing).unlink()
    trainer = make_trainer(tmp_path, max_steps=4, **SAVING)
    with pytest.raises(FileNotFoundError, match=rf"checkpoint-2 has no {missing}.*allow_partial_resume=True"):
        trainer.train(resume_from_checkpoint=str(out / "checkpoint-2"))
    with pytest.raises(FileNotFoundError, match=rf"no complete checkpoint in .*checkpoint-2 lacks {missing}"):
        trainer.train(resume_from_checkpoint=True)
    assert trainer.state.global_step == 0 and step_logs(trainer) == []  # refused before any step


def test_a_truncated_aligner_file_is_named(run, tmp_path):
    out = copy_run(run, tmp_path)
    aligner = out / "checkpoint-2" / ALIGNER_WEIGHTS_NAME
    aligner.write_bytes(aligner.read_bytes()[:100])
    trainer = make_trainer(tmp_path, max_steps=4, **SAVING)
    with pytest.raises(OSError, match=rf"checkpoint-2/{ALIGNER_WEIGHTS_NAME}: cannot read the aligner weights"):
        trainer.train(resume_from_checkpoint=str(out / "checkpoint-2"))


def test_a_checkpoint_without_state_or_weights_cannot_be_resumed(run, tmp_path):
    out = copy_run(run, tmp_path)
    (out / "checkpoint-2" / "model.safetensors").unlink()
    trainer = make_trainer(tmp_path, max_steps=4, allow_partial_resume=True)
    with pytest.raises(FileNotFoundError, match=r"checkpoint-2 cannot be resumed: it has no model weights"):
        trainer.train(resume_from_checkpoint=str(out / "checkpoint-2"))
    with pytest.raises(FileNotFoundError, match="no such checkpoint folder"):
        trainer.train(resume_from_checkpoint=str(out / "checkpoint-3"))


@pytest.mark.parametrize("missing", ["optimizer.pt", ALIGNER_WEIGHTS_NAME])
def test_allow_partial_resume_continues_with_fresh_state_and_says_so(run, tmp_path, caplog, missing):
    out = copy_run(run, tmp_path)
    (out / "checkpoint-2" / missing).unlink()
    trainer = make_trainer(tmp_path, max_steps=4, allow_partial_resume=True)
    with caplog.at_level(logging.WARNING):
        trainer.train(resume_from_checkpoint=str(out / "checkpoint-2"))
    assert f"has no {missing}: continuing with" in caplog.text
    assert [e["step"] for e in step_logs(trainer)] == [1, 2, 3, 4]
    adam_steps = {float(s["step"]) for s in trainer.optimizer.optimizer.state.values()}
    # a fresh optimizer has taken only the 2 resumed steps; a restored one all 4
    assert adam_steps == ({2.0} if missing == "optimizer.pt" else {4.0})


def test_resume_argument_from_a_command_line(tmp_path):
    assert parse_resume_argument("True") is True and parse_resume_argument("true") is True
    assert parse_resume_argument(True) is True
    for off in (None, False, "False", ""):
        assert parse_resume_argument(off) is None
    assert parse_resume_argument("out/checkpoint-2") == "out/checkpoint-2"
    (tmp_path / "True").mkdir()  # a folder really named True stays a path
    assert parse_resume_argument(str(tmp_path / "True")) == str(tmp_path / "True")


@pytest.mark.parametrize("script", ["distill.py", "sft.py"])
def test_example_scripts_resume_from_checkpoint_true(workspace, tmp_path, monkeypatch, script):  # noqa: F811
    out = tmp_path / "run"
    recipe = "pulse_to_qwen.yaml" if script == "distill.py" else "sft_qwen3vl_2b.yaml"
    distill = script == "distill.py"
    argv = ["--recipe", str(ROOT / "recipes" / recipe), *(DISTILL_CPU if distill else CPU)]
    argv += [*models_and_data(workspace, out, teacher=distill), "--save_strategy", "steps", "--save_steps", "1"]
    assert run_example(script, [*argv, "--max_steps", "1"], monkeypatch) == 0
    assert run_example(script, [*argv, "--max_steps", "2", "--resume_from_checkpoint", "True"], monkeypatch) == 0
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert [e["step"] for e in state["log_history"] if "loss" in e] == [1, 2]  # step 1 came from checkpoint-1


@pytest.mark.slow
def test_sigkill_during_a_save_leaves_nothing_resume_would_pick_and_resume_is_exact(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(WORKER.parent.parent), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(WORKER), str(tmp_path / "killed")], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    out = tmp_path / "killed" / "out"
    assert sorted(os.listdir(out)) == ["README.md", "_tmp-checkpoint-4", "checkpoint-2"]

    resumed = make_trainer(tmp_path / "killed", max_steps=4, **SAVING)
    resumed.train(resume_from_checkpoint=True)
    uninterrupted = make_trainer(tmp_path / "whole", max_steps=4, **SAVING)
    uninterrupted.train()
    full = {e["step"]: e for e in step_logs(uninterrupted)}
    after = {e["step"]: e for e in step_logs(resumed)}
    for step in (3, 4):
        for key in ("loss", "ce_loss", "mhca_loss", "rel_loss", "ot_loss"):
            assert after[step][key] == pytest.approx(full[step][key], rel=1e-5), (step, key)
    for key, value in uninterrupted.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value)
    assert sorted(os.listdir(out)) == ["README.md", "checkpoint-2", "checkpoint-4"]
