"""`evl-kd cache-teacher` from a distillation recipe: builds, resumes, refuses another run's cache in one line, and
splits the records between the processes of a multi-process launch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from evl_kd_trainer.cache import TeacherCacheReader, run_fingerprint
from evl_kd_trainer.cache.manifest import MANIFEST, SHARD_DIR
from evl_kd_trainer.cli import main as evl_kd_main
from evl_kd_trainer.models.loading import load_processor
from evl_kd_trainer.scripts.cache_teacher import run
from evl_kd_trainer.testing import build_tiny_llava_next, build_tiny_qwen3_vl, make_ecg_like_image
from evl_kd_trainer.trainer import EVLDistillConfig

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cache_cli")
    teacher, teacher_processor = build_tiny_llava_next(seed=1, flat=True)
    _, student_processor = build_tiny_qwen3_vl(seed=0)
    paths = {"root": root, "teacher": root / "teacher", "student": root / "student", "data": root / "train.json"}
    teacher.save_pretrained(paths["teacher"])
    teacher_processor.save_pretrained(paths["teacher"])
    student_processor.save_pretrained(paths["student"])  # only the student's processor is read
    (root / "images").mkdir()
    records = []
    for i in range(6):
        make_ecg_like_image(seed=i, size=(64 + 8 * i, 48)).save(root / "images" / f"ecg{i}.png")
        records.append({
            "id": f"r{i}",
            "image": f"images/ecg{i}.png",
            "conversations": [
                {"from": "human", "value": "<image>\nWhat is the rhythm?"},
                {"from": "gpt", "value": ["sinus rhythm", "sinus tachycardia", "sinus bradycardia"][i % 3]},
            ],
        })  # fmt: skip
    paths["data"].write_text(json.dumps(records))
    recipe = {
        "model_name_or_path": str(paths["student"]),
        "teacher_model_name_or_path": str(paths["teacher"]),
        "dataset_path": str(paths["data"]),
        "image_root": str(root),
        "kd_method": "evl",
        "lambda_ot": 0.1,
        "teacher_max_length": 512,
        "output_dir": str(root / "run"),
        "bf16": False,
        "use_cpu": True,
        "report_to": "none",
        "disable_tqdm": True,
    }
    paths["recipe"] = root / "recipe.yaml"
    paths["recipe"].write_text(yaml.safe_dump(recipe))
    return paths


def test_builds_from_the_recipe_and_passes_the_runs_own_check(workspace, tmp_path, capsys):
    out = tmp_path / "cache"
    assert run(["--recipe", str(workspace["recipe"]), "--output", str(out), "--shard_size", "4"]) == 0
    printed = capsys.readouterr().out
    assert "Teacher cache: 6 records" in printed and "per sample" in printed
    manifest = json.loads((out / MANIFEST).read_text())
    assert sorted(manifest["records"]) == [f"r{i}" for i in range(6)] and len(manifest["shards"]) == 2
    assert manifest["features"]["visual"] and manifest["features"]["hidden_positions"] == "attention"
    # The check a training run makes, from the teacher's folder and processors only (no teacher weights loaded).
    recipe = yaml.safe_load(workspace["recipe"].read_text())
    args = EVLDistillConfig(**{k: v for k, v in recipe.items() if k not in ("model_name_or_path", "dataset_path",
                                                                            "image_root")})  # fmt: skip
    expected = run_fingerprint(
        args, str(workspace["teacher"]), load_processor(workspace["teacher"]), load_processor(workspace["student"])
    )
    reader = TeacherCacheReader.open(out, expected_fingerprint=expected)
    assert reader.check([f"r{i}" for i in range(6)]) == []
    assert reader.batch(["r5", "r0"]).hidden.shape[-1] == 96
    # A rerun resumes: nothing left to do, the shards untouched.
    before = {p.name: p.stat().st_mtime_ns for p in (out / SHARD_DIR).iterdir()}
    assert run(["--recipe", str(workspace["recipe"]), "--output", str(out), "--shard_size", "4"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (out / SHARD_DIR).iterdir()} == before


def test_another_runs_cache_is_refused_in_one_line(workspace, tmp_path, capsys):
    out = tmp_path / "cache"
    assert run(["--recipe", str(workspace["recipe"]), "--output", str(out)]) == 0
    capsys.readouterr()
    argv = ["cache-teacher", "--recipe", str(workspace["recipe"]), "--output", str(out), "--kd_token_scope", "response"]
    assert evl_kd_main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("evl-kd cache-teacher: error: ") and "fingerprint field 'features'" in err[0]
    assert evl_kd_main([*argv, "--overwrite", "True"]) == 0  # or replaced on request
    assert json.loads((out / MANIFEST).read_text())["features"]["hidden_positions"] == "response"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "`output` is required"),
        (["--output", "x", "--kd_method", "sft"], "reads no teacher"),
        (["--output", "x", "--alpha", "0"], "carries no weight"),
        (["--output", "x", "--compression", "pca:0"], "`compression` must be one of"),
        (["--output", "x", "--kd_method", "dskd", "--logits_topk", "8"], "reads more than its logits"),
    ],
)
def test_bad_options_fail_before_the_teacher_loads(workspace, capsys, extra, message):
    assert evl_kd_main(["cache-teacher", "--recipe", str(workspace["recipe"]), *extra]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.distributed
@pytest.mark.slow
def test_two_processes_split_the_records_and_equal_one(workspace, tmp_path):
    single, double = tmp_path / "one", tmp_path / "two"
    assert run(["--recipe", str(workspace["recipe"]), "--output", str(single), "--batch_size", "1"]) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "0",
           str(ROOT / "examples" / "cache_teacher.py"), "--recipe", str(workspace["recipe"]), "--output", str(double),
           "--batch_size", "1"]  # fmt: skip
    from tests.test_distributed import free_port

    cmd[cmd.index("0")] = str(free_port())
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**__import__("os").environ, **env}, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((double / MANIFEST).read_text())
    assert {name[:4] for name in manifest["shards"]} == {"p000", "p001"} and len(manifest["records"]) == 6
    ids = [f"r{i}" for i in range(6)]
    one, two = TeacherCacheReader(single).batch(ids), TeacherCacheReader(double).batch(ids)
    assert torch.equal(one.hidden, two.hidden) and torch.equal(one.visual, two.visual)
