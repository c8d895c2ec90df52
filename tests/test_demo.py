"""The embedded default: the pieces of the demo report, and (marker `demo`, `make test-demo`) the whole demo."""

from __future__ import annotations

import json
import re
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from evl_kd_trainer.demo.figures import singular_values
from evl_kd_trainer.demo.report import verdicts

ROOT = Path(__file__).resolve().parent.parent


def test_singular_values_match_numpy_on_centred_features():
    features = torch.randn(40, 12) * torch.linspace(3, 0.1, 12) + 5.0
    ours = singular_values(features)
    centred = features.double().numpy() - features.double().numpy().mean(0)
    reference = np.linalg.svd(centred, compute_uv=False)
    np.testing.assert_allclose(ours.numpy(), reference / reference[0], rtol=1e-10)
    assert ours[0] == 1 and bool((ours[:-1] >= ours[1:]).all())


def _results(teacher: float, sft: float, evl: float, cont: float) -> dict:
    names = ("T", "S", "E", "C")
    return {n: {"splits": {"synthetic": {"accuracy": a, "n": 100}}} for n, a in zip(names, (teacher, sft, evl, cont))}


def test_report_verdicts_say_which_way_the_numbers_go():
    good = "\n".join(verdicts(_results(80, 30, 45, 40), 25.0, "T", "S", "E", "C"))
    assert "80.0" in good and "clearly above chance" in good
    assert "better than the SFT student" in good and "+15.0" in good and "beats it by 5.0" in good
    assert "+40.0 points from what the student reaches alone" in good and "room for distillation" in good
    assert "standard error of about 5.0 points" in good  # sqrt(0.45 * 0.55 / 100)
    bad = "\n".join(verdicts(_results(20, 50, 40, 45), 25.0, "T", "S", "E", "C"))
    assert "NOT above chance" in bad and "worse than" in bad and "-10.0" in bad and "loses to it by 5.0" in bad
    assert "-25.0 points" in bad and "little to distil" in bad


def test_comparison_table_lists_each_method_with_its_own_terms(tmp_path):
    from evl_kd_trainer.demo.report import comparison_table

    def run(name, steps_per_second, terms):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "train_results.json").write_text(json.dumps({"train_steps_per_second": steps_per_second}))
        history = [{"step": 5, "loss": 9.0, **{k: 9.0 for k in terms}}, {"step": 10, "loss": 1.0, **terms}]
        (folder / "trainer_state.json").write_text(json.dumps({"log_history": [*history, {"train_loss": 2.0}]}))
        return folder

    results = {"E": {"splits": {"synthetic": {"accuracy": 61.0}}}, "U": {"splits": {"synthetic": {"accuracy": 55.5}}}}
    table = comparison_table(
        results,
        {
            "evl": ("E", run("evl", 4.0, {"ce_loss": 0.5, "ot_loss": 0.25})),
            "uld": ("U", run("uld", 2.0, {"ce_loss": 0.75, "uld_loss": 0.125})),
        },
    ).splitlines()
    assert table[2] == "| `evl` | 61.0 | 0.250 | ce_loss 0.5, ot_loss 0.25 |"
    assert table[3] == "| `uld` | 55.5 | 0.500 | ce_loss 0.75, uld_loss 0.125 |"


def test_demo_defaults_give_the_teacher_more_data_and_hold_out_400_questions():
    """The teacher trains on 20x the student's labelled strips; 400 held-out questions over five classes, one of
    which (atrial flutter) beats like another (sinus tachycardia); the recipes read the student's subset."""
    import yaml

    from evl_kd_trainer.demo.models import STUDENT_CONFIG, TEACHER_CONFIG

    demo = runpy.run_path(str(ROOT / "examples/demo.py"))
    assert demo["DATA"]["n_test"] >= 400 and demo["DATA"]["n_train"] >= 10 * demo["STUDENT_STRIPS"]
    assert {"ST", "AFL"} <= set(demo["CLASSES"]) and len(demo["CLASSES"]) == 5
    for recipe in ("student_sft.yaml", "distill.yaml"):
        path = yaml.safe_load((ROOT / "recipes/demo" / recipe).read_text())["dataset_path"]
        assert Path(path).name == demo["STUDENT_TRAIN"], recipe
    text = TEACHER_CONFIG["text_config"]
    assert text["hidden_size"] > STUDENT_CONFIG["text_config"]["hidden_size"]
    assert TEACHER_CONFIG["vision_config"]["num_hidden_layers"] > STUDENT_CONFIG["vision_config"]["depth"]


def test_demo_teacher_reads_a_strip_at_192x64_in_64_flat_tokens():
    """64-px CLIP crops: the processor's anyres grid is the model's (1x3 crops + the base view, 16 tokens each)."""
    from PIL import Image

    from evl_kd_trainer.demo.models import build_demo_teacher

    model, processor = build_demo_teacher()
    assert processor.image_processor.image_grid_pinpoints == model.config.image_grid_pinpoints
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Rhythm?"}]}],
        add_generation_prompt=True,
    )
    inputs = processor(images=[Image.new("RGB", (224, 64), "white")], text=[prompt], return_tensors="pt")
    assert tuple(inputs["pixel_values"].shape) == (1, 4, 3, 64, 64)  # base view + 3 crops of the 192x64 strip
    assert int((inputs["input_ids"] == model.config.image_token_index).sum()) == 64
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[:2] == inputs["input_ids"].shape and torch.isfinite(logits).all()


@pytest.mark.demo
def test_make_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples/demo.py"), "--output_dir", str(out), "--quiet"],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = (out / "report.md").read_text()
    assert str((out / "report.md").resolve()) in proc.stdout
    for picture in ("loss_curves.png", "transport_plan.png", "spectra.png", "eval/per_class.png"):
        assert (out / picture).stat().st_size > 5000, picture
        assert picture in report
    assert "| Teacher (tiny LLaVA-NeXT)" in report and "Student SFT + EVL-ECG" in report
    results = json.loads((out / "eval/results.json").read_text())["models"]
    teacher = results["Teacher (tiny LLaVA-NeXT)"]["splits"]["synthetic"]
    control = results["Student SFT + SFT (same steps)"]["splits"]["synthetic"]
    assert teacher["n"] == control["n"] == 400
    assert teacher["accuracy"] >= 20.0 + 15.0, "the trained teacher must be clearly above chance (20%)"
    assert teacher["accuracy"] >= control["accuracy"] + 10.0, "the teacher must know more than the student learns alone"
    evl_logs = json.loads((out / "student-evl/trainer_state.json").read_text())["log_history"]
    assert all(np.isfinite(e[k]) for e in evl_logs if "ot_loss" in e for k in ("ce_loss", "mhca_loss", "rel_loss"))
    assert re.search(r"Demo finished in (\d+\.\d) min", proc.stdout)
