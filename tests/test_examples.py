"""The launchers in examples/ run from recipes: every stage and every KD method for a couple of steps on tiny
models, command-line overrides win over the recipe, and bad recipes fail before any model loads."""

from __future__ import annotations

import json
import math
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from evl_kd_trainer.methods import builtin_method_names, get_method
from evl_kd_trainer.scripts.recipe import RecipeError
from evl_kd_trainer.testing import build_tiny_llava_next, build_tiny_qwen3_vl, make_ecg_like_image

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
# What a CPU smoke run must override in the GPU recipes (bf16, checkpointing, batch, paths).
CPU = [
    "--bf16", "False", "--activation_checkpointing", "False", "--gradient_checkpointing", "False",
    "--dtype", "float32", "--use_cpu", "True", "--per_device_train_batch_size", "2",
    "--gradient_accumulation_steps", "1", "--max_steps", "2", "--logging_steps", "1", "--save_strategy", "no",
    "--report_to", "none", "--disable_tqdm", "True", "--max_length", "512", "--min_pixels", "784",
    "--max_pixels", "4096",
]  # fmt: skip
DISTILL_CPU = [*CPU, "--teacher_max_length", "512"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("examples")
    student, student_processor = build_tiny_qwen3_vl(seed=0)
    teacher, teacher_processor = build_tiny_llava_next(seed=1)
    paths = {"student": root / "student", "teacher": root / "teacher", "data": root / "train.json"}
    student.save_pretrained(paths["student"])
    student_processor.save_pretrained(paths["student"])
    teacher.save_pretrained(paths["teacher"])
    teacher_processor.save_pretrained(paths["teacher"])
    (root / "images").mkdir()
    records = []
    for i in range(6):
        make_ecg_like_image(seed=i, size=(64 + 8 * i, 48)).save(root / "images" / f"ecg{i}.png")
        records.append(
            {
                "id": f"r{i}",
                "image": f"images/ecg{i}.png",
                "conversations": [
                    {"from": "human", "value": "<image>\nWhat is the rhythm?"},
                    {"from": "gpt", "value": ["sinus rhythm", "sinus tachycardia", "sinus bradycardia"][i % 3]},
                ],
            }
        )
    paths["data"].write_text(json.dumps(records))
    return paths


def models_and_data(ws: dict[str, Path], out: Path, teacher: bool = True) -> list[str]:
    argv = [
        "--model_name_or_path", str(ws["student"]), "--dataset_path", str(ws["data"]),
        "--image_root", str(ws["data"].parent), "--output_dir", str(out),
    ]  # fmt: skip
    return [*argv, "--teacher_model_name_or_path", str(ws["teacher"])] if teacher else argv


def run_example(script: str, argv: list[str], monkeypatch) -> int:
    """Run an example file as `python examples/<script> ...` would, in this process (fast, same coverage)."""
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / script), *argv])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    return exit_info.value.code


def saved_args(out: Path):
    return torch.load(out / "training_args.bin", weights_only=False)


def test_sft_example_runs_the_paper_recipe_with_overrides(workspace, tmp_path, monkeypatch):
    out = tmp_path / "sft"
    argv = ["--recipe", str(ROOT / "recipes/sft_qwen3vl_2b.yaml"), *CPU, *models_and_data(workspace, out, False)]
    assert run_example("sft.py", [*argv, "--learning_rate", "1e-4"], monkeypatch) == 0
    args = saved_args(out)
    assert args.learning_rate == 1e-4  # the command line wins over the recipe's 2e-4
    assert args.projector_learning_rate == 5e-4  # the recipe wins over the default
    assert args.max_steps == 2 and (out / "model.safetensors").is_file()


METHOD_TERMS = {
    "evl": {"ce_loss", "mhca_loss", "rel_loss", "ot_loss"},
    "sft": {"ce_loss"},
    "uld": {"ce_loss", "uld_loss"},
    "multilevel_ot": {"ce_loss", "mlot_token_loss", "mlot_seq_loss"},
    "dskd": {"ce_loss", "dskd_t2s_ce_loss", "dskd_student_space_loss", "dskd_teacher_space_loss"},
    "emkd": {"ce_loss", "vsd_loss", "vlad_loss"},
}


def _method_recipe(name: str) -> str:
    return "pulse_to_qwen.yaml" if name == "evl" else f"baselines/{name}.yaml"


def expected_terms(name: str) -> set[str]:
    """The logged terms of a method: the table above for the built-in ones (checked against each method's own
    declaration in test_methods_registry), the declaration for any other registered method."""
    return METHOD_TERMS.get(name, {"ce_loss", *get_method(name).terms})


@pytest.mark.parametrize("recipe", [_method_recipe(name) for name in builtin_method_names()])
def test_distill_example_trains_each_method_from_its_recipe_and_logs_its_terms(
    workspace, tmp_path, monkeypatch, recipe
):
    out = tmp_path / "run"
    argv = ["--recipe", str(ROOT / "recipes" / recipe), *DISTILL_CPU, *models_and_data(workspace, out)]
    assert run_example("distill.py", argv, monkeypatch) == 0
    method = yaml.safe_load((ROOT / "recipes" / recipe).read_text())["kd_method"]
    args = saved_args(out)
    assert args.kd_method == method and args.learning_rate == 2e-4 and args.max_steps == 2
    assert (out / "model.safetensors").is_file()
    steps = [e for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in e]
    assert len(steps) == 2
    for entry in steps:
        logged = {k for k in entry if k.endswith("_loss")}
        assert logged == expected_terms(method), (method, logged)
        assert all(math.isfinite(entry[k]) for k in logged)


def test_distill_console_script_launches_as_a_process(workspace, tmp_path):
    """`python examples/distill.py --recipe ...` in a fresh process: what `accelerate launch` starts on each rank."""
    out = tmp_path / "proc"
    cmd = [sys.executable, str(EXAMPLES / "distill.py"), "--recipe", str(ROOT / "recipes/pulse_to_qwen.yaml")]
    cmd += [*DISTILL_CPU, *models_and_data(workspace, out), "--max_steps", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (out / "model.safetensors").is_file() and saved_args(out).max_steps == 1


def write_recipe(tmp_path: Path, **entries) -> Path:
    recipe = yaml.safe_load((ROOT / "recipes/pulse_to_qwen.yaml").read_text())
    recipe.update(entries)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def cli_error(script: str, argv: list[str], monkeypatch, capsys) -> str:
    """Run an example that must refuse its input: status 2 and one line naming the problem, no traceback."""
    code = run_example(script, argv, monkeypatch)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err, err
    first, *rest = err.strip().splitlines()
    assert first.startswith("evl-kd distill: error: "), err
    assert rest == ["(--traceback or EVL_KD_DEBUG=1 shows the traceback)"], err
    return first


def test_unknown_recipe_key_is_named_before_any_model_loads(tmp_path, monkeypatch, capsys):
    recipe = write_recipe(tmp_path, lambda_otx=0.2)
    assert re.search("recipe.yaml.*lambda_otx", cli_error("distill.py", ["--recipe", str(recipe)], monkeypatch, capsys))


def test_wrong_type_in_recipe_names_the_key(tmp_path, monkeypatch, capsys):
    recipe = write_recipe(tmp_path, alpha="a lot")
    assert re.search("recipe.yaml.*alpha", cli_error("distill.py", ["--recipe", str(recipe)], monkeypatch, capsys))


def test_missing_recipe_file_is_named(tmp_path, monkeypatch, capsys):
    assert "nope.yaml" in cli_error("distill.py", ["--recipe", str(tmp_path / "nope.yaml")], monkeypatch, capsys)


def test_unknown_command_line_flag_is_an_error(monkeypatch, capsys):
    argv = ["--recipe", str(ROOT / "recipes/pulse_to_qwen.yaml"), "--lambda_otx", "1"]
    assert "--lambda_otx" in cli_error("distill.py", argv, monkeypatch, capsys)


def test_mistyped_flag_value_is_one_line(monkeypatch, capsys):
    """`--lambda_ot abc` printed the whole 230-line usage and three chained tracebacks."""
    argv = ["--recipe", str(ROOT / "recipes/pulse_to_qwen.yaml"), "--lambda_ot", "abc"]
    line = cli_error("distill.py", argv, monkeypatch, capsys)
    assert re.search(r"--lambda_ot.*invalid float value: 'abc'", line)


def test_traceback_flag_and_env_show_the_exception(tmp_path, monkeypatch, capsys):
    recipe = write_recipe(tmp_path, lambda_otx=0.2)
    with pytest.raises(RecipeError, match="lambda_otx"):
        run_example("distill.py", ["--recipe", str(recipe), "--traceback"], monkeypatch)
    monkeypatch.setenv("EVL_KD_DEBUG", "1")
    with pytest.raises(RecipeError, match="lambda_otx"):
        run_example("distill.py", ["--recipe", str(recipe)], monkeypatch)


def test_gpu_recipe_on_a_cpu_machine_names_the_recipe_and_bf16(workspace, tmp_path, monkeypatch, capsys):
    if torch.cuda.is_available():
        pytest.skip("bf16 is supported here")
    argv = ["--recipe", str(ROOT / "recipes/pulse_to_qwen.yaml"), *models_and_data(workspace, tmp_path / "o")]
    assert re.search(r"pulse_to_qwen\.yaml.*bf16", cli_error("distill.py", argv, monkeypatch, capsys))


def test_missing_model_and_data_are_named_before_loading(workspace, tmp_path, monkeypatch, capsys):
    # no `--use_cpu`: the recipe is for an H100 (bf16); on a CPU machine the missing files still speak first
    recipe = [str(ROOT / "recipes/pulse_to_qwen.yaml")]
    # the recipe's checkpoint folders do not exist here: the student's key is named first
    line = cli_error("distill.py", ["--recipe", *recipe], monkeypatch, capsys)
    assert re.search("model_name_or_path.*qwen3vl-2b-ecg-sft", line) and "bf16" not in line
    argv = ["--recipe", *recipe, "--model_name_or_path", str(workspace["student"])]
    line = cli_error("distill.py", argv, monkeypatch, capsys)
    assert re.search("teacher_model_name_or_path.*pulse-7b-hf", line)
    argv += ["--teacher_model_name_or_path", str(workspace["teacher"])]
    assert re.search("dataset_path.*ECGInstruct.json", cli_error("distill.py", argv, monkeypatch, capsys))
    assert not (tmp_path / "checkpoints").exists()


def test_out_of_range_value_is_an_error(workspace, tmp_path, monkeypatch, capsys):
    recipe = write_recipe(tmp_path, alpha=1.5)
    argv = ["--recipe", str(recipe), "--use_cpu", "True", *models_and_data(workspace, tmp_path / "o")]
    assert re.search(r"recipe\.yaml.*`alpha` must be in \[0, 1\]", cli_error("distill.py", argv, monkeypatch, capsys))


def test_sft_projector_learning_rate_group(workspace, tmp_path):
    from evl_kd_trainer.models.loading import load_model, load_processor
    from evl_kd_trainer.scripts.sft import PROJECTOR_NAME_PATTERNS, VLMSFTConfig, VLMSFTTrainer
    from evl_kd_trainer.testing import make_tiny_vlm_dataset

    model = load_model(workspace["student"])
    args = VLMSFTConfig(
        output_dir=str(tmp_path), learning_rate=1e-4, projector_learning_rate=5e-4, use_cpu=True, bf16=False,
        report_to="none", max_steps=1,
    )  # fmt: skip
    trainer = VLMSFTTrainer(
        model=model, args=args, train_dataset=make_tiny_vlm_dataset(n=2), processing_class=load_processor(workspace["student"])
    )  # fmt: skip
    optimizer = trainer.create_optimizer()
    names = {id(p): n for n, p in model.named_parameters()}
    for group in optimizer.param_groups:
        in_projector = {any(k in names[id(p)] for k in PROJECTOR_NAME_PATTERNS) for p in group["params"]}
        assert len(in_projector) == 1
        assert group["lr"] == (5e-4 if in_projector.pop() else 1e-4)
    assert any(group["lr"] == 5e-4 for group in optimizer.param_groups)
