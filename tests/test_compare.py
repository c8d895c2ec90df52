"""`evl-kd compare` end to end with the demo's tiny models and recipes: 2 methods x 2 seeds of a few steps, the
table and numbers it writes (checked against each run's own evaluation), resuming, and the input checks that
must speak before any training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from evl_kd_trainer.methods import method_names
from evl_kd_trainer.scripts.cli_errors import UserError
from evl_kd_trainer.scripts.compare import main as compare_main
from evl_kd_trainer.scripts.compare import run as compare_run
from evl_kd_trainer.scripts.recipe import RecipeError

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "demo" / "distill.yaml"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict[str, Path]:
    """The demo's synthetic data (a few strips) and its tiny random starting models."""
    from evl_kd_trainer.demo.models import write_demo_models
    from evl_kd_trainer.ecg import make_synthetic_dataset

    root = tmp_path_factory.mktemp("compare")
    paths = make_synthetic_dataset(
        root / "data", n_train=8, n_test=6, layout="1x1", image_size=(224, 64), duration=6.0, classes=("SB", "AF")
    )
    models = write_demo_models(root / "models", paths["train"], paths["test"])
    return {"root": root, "data": root / "data", "train": Path(paths["train"]), "test": Path(paths["test"]), **models}


def overrides(ws: dict[str, Path]) -> list[str]:
    """Every run: the tiny models and data instead of demo_output/, two steps."""
    return [
        f"model_name_or_path={ws['student']}", f"teacher_model_name_or_path={ws['teacher']}",
        f"dataset_path={ws['train']}", f"image_root={ws['data']}",
        "--max_steps", "2", "--per_device_train_batch_size", "4", "--logging_steps", "1", "--disable_tqdm", "True",
    ]  # fmt: skip


def eval_overrides(ws: dict[str, Path]) -> list[str]:
    return ["--eval_overrides", f"data_files={ws['test']}", f"image_root={ws['data']}", "progress=false"]


def compare_argv(ws: dict[str, Path], out: Path, *extra: str) -> list[str]:
    # KEY=VALUE overrides first: `--methods` takes the words that follow it
    return [
        "--recipe", str(RECIPE), *overrides(ws), *extra, "--methods", "sft", "no_rel=evl,lambda_rel=0",
        "--seeds", "2", "--bootstrap", "500", "--output_dir", str(out), *eval_overrides(ws),
    ]  # fmt: skip


def _markers(out: Path) -> dict[str, int]:
    return {str(path.relative_to(out)): path.stat().st_mtime_ns for path in sorted(out.glob("runs/*/*/done.json"))}


def test_two_methods_two_seeds_table_numbers_and_resume(workspace, tmp_path):
    out = tmp_path / "cmp"
    assert compare_run(compare_argv(workspace, out)) == 0
    payload = json.loads((out / "comparison.json").read_text())
    assert payload["runs_executed"] == 4 and payload["runs_reused"] == 0 and payload["seeds"] == [0, 1]
    assert payload["command"].startswith("evl-kd compare --recipe") and payload["wall_seconds"] > 0
    (entry,) = payload["results"]  # the demo's held-out split: multiple choice, accuracy
    assert (entry["split"], entry["metric"], entry["n_questions"], entry["dropped_questions"]) == (
        "synthetic",
        "accuracy",
        6,
        0,
    )
    assert [m["name"] for m in entry["methods"]] == ["sft", "no_rel"]

    for method in entry["methods"]:
        for seed, value in zip((0, 1), method["per_seed"]):
            run = out / "runs" / method["name"] / f"seed{seed}"
            # the run trained what its name says, from the recipe's starting student, with its seed
            args = torch.load(run / "model" / "training_args.bin", weights_only=False)
            assert (args.seed, args.max_steps) == (seed, 2)
            assert args.kd_method == ("sft" if method["name"] == "sft" else "evl")
            assert args.lambda_rel == (0.0 if method["name"] == "no_rel" else 0.03)
            # its score is the evaluator's own number for that run
            scores = json.loads((run / "eval" / "results.json").read_text())["models"]
            assert scores[f"{method['name']}-seed{seed}"]["splits"]["synthetic"]["accuracy"] == pytest.approx(value)
        assert method["mean"] == pytest.approx(sum(method["per_seed"]) / 2)
        assert method["ci"][0] <= method["mean"] <= method["ci"][1]
    control, other = entry["methods"]
    assert "diff" not in control and other["diff"] == pytest.approx(other["mean"] - control["mean"])
    assert other["diff_ci"][0] <= other["diff"] <= other["diff_ci"][1] and 0 <= other["frac_positive"] <= 1

    table = (out / "comparison.md").read_text().splitlines()
    assert "## Synthetic: Accuracy (6 questions; higher is better)" in table
    rows = [line for line in table if line.startswith("| `")]
    assert (
        len(rows) == 2
        and rows[0].startswith("| `sft` (control) | sft |")
        and rows[1].startswith("| `no_rel` | evl, lambda_rel=0 |")
    )
    assert (out / "comparison.png").stat().st_size > 5000

    # a second call trains nothing and leaves every marker as it was
    before = _markers(out)
    assert len(before) == 4
    assert compare_run(compare_argv(workspace, out)) == 0
    again = json.loads((out / "comparison.json").read_text())
    assert (again["runs_executed"], again["runs_reused"]) == (0, 4) and _markers(out) == before
    assert again["results"] == payload["results"]  # the same draws from the same seed

    # a run killed before its marker was written is done again, from a clean folder; the others are kept
    killed = out / "runs" / "no_rel" / "seed1"
    (killed / "done.json").unlink()
    (killed / "leftover.txt").write_text("half-written")
    assert compare_run(compare_argv(workspace, out)) == 0
    third = json.loads((out / "comparison.json").read_text())
    assert (third["runs_executed"], third["runs_reused"]) == (1, 3)
    assert [r["key"] for r in third["runs"] if r["executed_now"]] == ["no_rel/seed1"]
    assert not (killed / "leftover.txt").exists()
    after = _markers(out)
    assert {k: v for k, v in after.items() if "no_rel/seed1" not in k} == {
        k: v for k, v in before.items() if "no_rel/seed1" not in k
    }

    # the summary is computed from the per-question rows: rows with known answers give known numbers (the tiny
    # models answer nothing right after two steps), a superset of right answers a difference that is never < 0
    known = {("sft", 0): "111000", ("sft", 1): "110000", ("no_rel", 0): "111100", ("no_rel", 1): "111000"}
    for (name, seed), pattern in known.items():
        path = out / "runs" / name / f"seed{seed}" / "eval" / "predictions" / f"{name}-seed{seed}" / "synthetic.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        path.write_text("".join(json.dumps({**row, "correct": bit == "1"}) + "\n" for row, bit in zip(rows, pattern)))
    assert compare_run(compare_argv(workspace, out)) == 0
    control, other = json.loads((out / "comparison.json").read_text())["results"][0]["methods"]
    assert control["per_seed"] == pytest.approx([50.0, 100 / 3]) and other["per_seed"] == pytest.approx([200 / 3, 50.0])
    assert other["diff"] == pytest.approx(50 / 3) and other["diff_ci"][0] >= 0 and 0.5 < other["frac_positive"] < 1
    assert control["ci"][0] < control["mean"] < control["ci"][1]

    # other settings for the same folder: refused before anything trains
    with pytest.raises(UserError, match=r"other settings \(overrides differ\)"):
        compare_run(compare_argv(workspace, out, "--learning_rate", "1e-3"))
    assert _markers(out) == after


@pytest.mark.parametrize(
    ("methods", "every_run", "evaluation", "message"),
    [
        (["sft", "foo"], [], [], "method 'foo': unknown kd_method 'foo'; known: " + ", ".join(method_names())),
        (["sft", "x=evl,lamda_rel=0"], [], [], "method 'x=evl,lamda_rel=0': 'lamda_rel' is not a field of EVLDistillConfig; did you mean 'lambda_rel'?"),
        (["sft", "x=evl,seed=3"], [], [], "'seed' is set by the comparison for every run"),
        (["sft", "x=evl,alpha=2"], [], [], "method 'x': "),
        (["sft", "x=evl,lambda_rel"], [], [], "'lambda_rel' is not KEY=VALUE"),
        (["sft", "evl", "max_steps=3"], [], [], "did you mean to pass max_steps=3 to every run"),
        (["evl", "uld"], [], [], "`control`: 'sft' is not among the methods"),
        (["sft"], [], [], "needs the control and at least one other method"),
        (["sft", "evl"], ["max_stepz=3"], [], "override 'max_stepz' is not a field of EVLDistillConfig, ModelConfig or DataArguments"),
        (["sft", "evl"], ["--seed", "4"], [], "override 'seed': each run sets it"),
        (["sft", "evl"], [], ["max_smaples=3"], "override 'max_smaples' is not a field of EvalArguments (`evl-kd evaluate --help`); did you mean 'max_samples'?"),
        (["sft", "evl"], [], ["model_names=x"], "override 'model_names': each run names its own row"),
        (["sft", "evl"], [], ["batch_size=0"], "`batch_size` must be >= 1"),
    ],
)  # fmt: skip
def test_bad_methods_and_overrides_fail_in_one_line_before_training(
    workspace, tmp_path, capsys, methods, every_run, evaluation, message
):
    out = tmp_path / "cmp"
    argv = ["--recipe", str(RECIPE), *overrides(workspace), *every_run, *eval_overrides(workspace), *evaluation]
    assert compare_main([*argv, "--methods", *methods, "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("evl-kd compare: error: ") and message in err, err
    assert not out.exists()  # nothing trained, nothing written


def test_the_example_launcher_is_the_same_command(workspace, monkeypatch, capsys):
    import runpy
    import sys

    monkeypatch.setattr(sys, "argv", ["examples/compare.py", "--recipe", str(RECIPE), "--methods", "sft", "bogus"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(ROOT / "examples" / "compare.py"), run_name="__main__")
    assert exit_info.value.code == 2 and "unknown kd_method 'bogus'" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="not accelerate launch / torchrun"):
        compare_run(["--recipe", str(RECIPE), "--methods", "sft", "evl"])


def test_missing_recipes_and_paths_are_named(workspace, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the demo recipes' relative `demo_output/...` paths: absent here even after `make demo`
    with pytest.raises(FileNotFoundError, match="`recipe`: no such file"):
        compare_run(["--recipe", str(tmp_path / "none.yaml"), "--methods", "sft", "evl"])
    lone = tmp_path / "distill.yaml"
    lone.write_text(RECIPE.read_text())
    with pytest.raises(FileNotFoundError, match="no evaluate.yaml beside"):
        compare_run(["--recipe", str(lone), "--methods", "sft", "evl"])
    with pytest.raises(UserError, match="method 'sft': `model_name_or_path`: no such model folder"):  # no demo_output/
        compare_run(["--recipe", str(RECIPE), "--methods", "sft", "evl", "--output_dir", str(tmp_path / "o")])
    with pytest.raises(RecipeError, match="seeds"):
        compare_run(["--recipe", str(RECIPE), "--methods", "sft", "evl", "--seeds", "0"])


def test_help_gives_the_method_syntax_and_the_registered_methods(tmp_path, monkeypatch, capsys):
    from evl_kd_trainer.cli import main as evl_kd_main

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert evl_kd_main(["compare", "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: evl-kd compare --recipe RECIPE --methods METHOD")
    assert "NAME or NAME=KD_METHOD[,KEY=VALUE...]" in text and "ot_only=evl,lambda_mhca=0,lambda_rel=0" in text
    known = " ".join(text[text.index("(known: ") : text.index("); `sft` is the control")].split())
    assert known == "(known: " + ", ".join(method_names()) and "Turn off --keep_models" in text
    assert list((tmp_path / "cache" / "evl_kd_trainer" / "help").glob("evl-kd-compare-*.txt"))  # served cached next
