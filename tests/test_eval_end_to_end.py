"""Generation and the `evaluate` script end to end with tiny offline models (Qwen3-VL student, LLaVA-NeXT teacher).

The models are random, so their answers are noise; what is checked is the machinery: prompts in each model's
format, left-padded batches equal to one-by-one generation, answers cut by `max_new_tokens` counted, bad images
reported, and the written JSON / markdown / PNG / JSONL consistent with `score_ecgbench` on the saved answers.
"""

import json
import runpy
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from evl_kd_trainer.cli import main as evl_kd_main
from evl_kd_trainer.eval import read_split, score_ecgbench
from evl_kd_trainer.eval.generate import BatchGenerator, resolve_chat_template
from evl_kd_trainer.eval.records import RecordError
from evl_kd_trainer.models.loading import load_model, load_processor
from evl_kd_trainer.scripts.evaluate import run as evaluate_main
from evl_kd_trainer.scripts.recipe import RecipeError
from evl_kd_trainer.testing import build_tiny_llava_next, build_tiny_qwen3_vl, make_ecg_like_image

REPO = Path(__file__).resolve().parents[1]
SYNTHETIC_QUESTION = (
    "<image>\nWhich rhythm does this ECG show?\nA. sinus rhythm\nB. atrial fibrillation\nC. sinus bradycardia\n"
    "Answer with the option's letter."
)
ECGQA_QUESTION = "Does this ECG show atrial fibrillation? Options: yes, no, not sure. Only answer based on the given Options without any explanation."


def _conversation(question, answer):
    return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Two saved tiny models and three tiny splits (synthetic multiple choice, PTB-XL Super, ECG-QA)."""
    root = tmp_path_factory.mktemp("eval")
    for name, builder in (("qwen", build_tiny_qwen3_vl), ("llava", build_tiny_llava_next)):
        model, processor = builder()
        model.save_pretrained(root / name)
        processor.save_pretrained(root / name)
    (root / "images").mkdir()
    for index in range(3):  # small pictures keep LLaVA-NeXT's anyres crops (and the test) few
        make_ecg_like_image(index, size=(32 + 16 * index, 32)).save(root / "images" / f"{index}.png")
    splits = {
        "synthetic": [_conversation(SYNTHETIC_QUESTION, letter) for letter in "ABC"],
        "ptb-xl-super": [
            _conversation("What are the diagnostic superclasses?", answer) for answer in ("NORM", "MI, STTC", "CD")
        ],
        "ecgqa": [_conversation(ECGQA_QUESTION, answer) for answer in (["yes"], ["no"], ["not sure"])],
    }
    for split, conversations in splits.items():
        records = [
            {"id": f"{split}-{index}", "image": f"images/{index}.png", "conversations": conversation}
            for index, conversation in enumerate(conversations)
        ]
        (root / f"{split}.json").write_text(json.dumps(records))
    return root


def _generator(workspace, name, **kwargs):
    model, processor = load_model(workspace / name), load_processor(workspace / name)
    template = resolve_chat_template(model.config.model_type, processor, "auto")
    return BatchGenerator(model, processor, template, **{"max_new_tokens": 4, "batch_size": 3, **kwargs})


@pytest.mark.parametrize("name", ["qwen", "llava"])
def test_left_padded_batches_match_one_by_one_generation(workspace, name):
    records = read_split(workspace / "synthetic.json").records
    batched, skipped = _generator(workspace, name, batch_size=3)(records, progress=False)
    single, _ = _generator(workspace, name, batch_size=1)(records, progress=False)
    assert not skipped
    assert [g.text for g in batched] == [g.text for g in single]
    assert [g.num_tokens for g in batched] == [g.num_tokens for g in single]


def test_each_model_is_prompted_in_its_own_format(workspace):
    record = read_split(workspace / "ptb-xl-super.json").records[0]
    llava = _generator(workspace, "llava").render(record)
    assert llava.startswith("A chat between a curious human") and llava.endswith(
        "USER: <image>\nWhat are the diagnostic superclasses? ASSISTANT:"
    )
    qwen = _generator(workspace, "qwen").render(record)
    assert qwen == (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What are the diagnostic superclasses?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    with pytest.raises(ValueError, match="Unknown chat template 'vicuna'"):
        resolve_chat_template("qwen3_vl", None, "vicuna")


def _force_token(generator, token_id):
    """Make `token_id` the argmax at every step (a hook on the tiny model's LM head)."""

    def hook(module, inputs, output):
        output = output.clone()
        output[..., token_id] += 1e4
        return output

    return generator.model.lm_head.register_forward_hook(hook)


def test_answers_cut_by_max_new_tokens_are_flagged(workspace):
    records = read_split(workspace / "synthetic.json").records
    generator = _generator(workspace, "qwen", max_new_tokens=3)
    tokenizer = generator.tokenizer
    handle = _force_token(generator, tokenizer.convert_tokens_to_ids("A"))
    outputs, _ = generator(records, progress=False)
    handle.remove()
    assert [(g.text, g.num_tokens, g.hit_max_new_tokens) for g in outputs] == [("AAA", 3, True)] * 3
    handle = _force_token(generator, tokenizer.eos_token_id)
    outputs, _ = generator(records, progress=False)
    handle.remove()
    assert [(g.text, g.num_tokens, g.hit_max_new_tokens) for g in outputs] == [("", 0, False)] * 3


def test_unreadable_images_fail_naming_the_record_or_are_skipped(workspace, tmp_path):
    records = read_split(workspace / "synthetic.json").records
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    records[1].image = str(broken)
    with pytest.raises(RecordError, match=r"record 'synthetic-1'.*cannot decode image.*broken.png"):
        _generator(workspace, "qwen")(records, progress=False)
    outputs, skipped = _generator(workspace, "qwen", unreadable_images="skip")(records, progress=False)
    assert outputs[1] is None and outputs[0] is not None and outputs[2] is not None
    assert skipped[0][0] == "synthetic-1" and "broken.png" in skipped[0][1]


def test_example_script_from_a_recipe_writes_consistent_outputs(workspace, tmp_path, monkeypatch):
    output_dir = tmp_path / "out"
    splits = ["synthetic", "ptb-xl-super", "ecgqa"]
    recipe = {
        "model_name_or_path": [str(workspace / "qwen"), str(workspace / "llava")],
        "model_names": ["Tiny Qwen3-VL", "Tiny LLaVA-NeXT"],
        "splits": splits,
        "data_files": [str(workspace / f"{split}.json") for split in splits],
        "batch_size": 2,
        "max_new_tokens": 3,
        "max_pixels": 4096,  # the Qwen-VL student's budget; the LLaVA teacher keeps its crops
        "output_dir": str(output_dir),
        "progress": False,
    }
    recipe_path = tmp_path / "evaluate.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    monkeypatch.setattr(sys, "argv", ["evaluate.py", "--recipe", str(recipe_path), "--max_samples", "2"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(REPO / "examples" / "evaluate.py"), run_name="__main__")
    assert exit_info.value.code == 0

    results = json.loads((output_dir / "results.json").read_text())
    assert list(results["models"]) == ["Tiny Qwen3-VL", "Tiny LLaVA-NeXT"]
    for model, entry in results["models"].items():
        for split in splits:
            scores = entry["splits"][split]
            rows = [json.loads(line) for line in (output_dir / scores["predictions_file"]).read_text().splitlines()]
            assert [row["id"] for row in rows] == [f"{split}-{i}" for i in range(2)]
            recomputed = score_ecgbench(
                split, [r["prediction"] for r in rows], [r["reference"] for r in rows], [r["prompt"] for r in rows]
            )
            for key in (
                *(("auc", "f1", "hamming_loss") if split == "ptb-xl-super" else ("accuracy",)),
                "n",
                "unparsed",
            ):
                expected = recomputed[key]
                assert scores[key] == (None if expected != expected else pytest.approx(expected)), (model, split, key)
            assert scores["hit_max_new_tokens"] == sum(row["hit_max_new_tokens"] for row in rows)
            assert all(row["num_tokens"] <= 3 for row in rows)

    table = (output_dir / "results.md").read_text()
    lines = table.splitlines()
    assert lines[0] == "| Datasets | PTB-XL-Super |  |  | ECG-QA | Synthetic |"
    assert lines[2] == "| Metric | AUC | F1 | HL ↓ | Accuracy | Accuracy |"
    qwen_scores = results["models"]["Tiny Qwen3-VL"]["splits"]
    cells = [qwen_scores["ptb-xl-super"][k] for k in ("auc", "f1", "hamming_loss")]
    cells += [qwen_scores["ecgqa"]["accuracy"], qwen_scores["synthetic"]["accuracy"]]
    assert lines[3] == "| Tiny Qwen3-VL | " + " | ".join("n/a" if v is None else f"{v:.1f}" for v in cells) + " |"
    assert lines[4].startswith("| Tiny LLaVA-NeXT | ")
    with Image.open(output_dir / "per_class.png") as chart:
        assert chart.format == "PNG" and chart.size[0] > 500


def test_script_checks_arguments_before_loading_a_model(workspace, tmp_path, capsys):
    model = str(workspace / "qwen")
    data = str(workspace / "synthetic.json")
    # through the `evl-kd` dispatcher: one line naming the command and the problem, status 2, no traceback
    assert evl_kd_main(["evaluate", "--model_name_or_path", model, "--splits", "ptbxl", "--data_files", data]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("evl-kd evaluate: error: command line: Unknown ECG-Bench split 'ptbxl'")
        and "Traceback" not in err
    )
    with pytest.raises(ValueError, match=r"`data_files` needs one file per split: 2 split\(s\), 1 file\(s\)"):
        evaluate_main(["--model_name_or_path", model, "--splits", "csn", "g12ec", "--data_files", data])
    with pytest.raises(FileNotFoundError, match=r"`data_files`: no such file for split 'csn'"):
        evaluate_main(["--model_name_or_path", model, "--splits", "csn", "--data_files", str(tmp_path / "x.json")])
    with pytest.raises(FileNotFoundError, match="`model_name_or_path`: no such model folder"):
        evaluate_main(["--model_name_or_path", str(tmp_path / "nomodel"), "--splits", "csn", "--data_files", data])
    with pytest.raises(ValueError, match="`batch_size` must be >= 1"):
        evaluate_main(["--model_name_or_path", model, "--splits", "csn", "--data_files", data, "--batch_size", "0"])
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(yaml.safe_dump({"model_name_or_path": [model], "split": ["csn"]}))
    with pytest.raises(RecipeError, match=r"unknown key\(s\) 'split'"):
        evaluate_main(["--recipe", str(recipe)])
    # A gold answer the scorer cannot read fails while the records are checked: the empty "model" folder below is
    # never loaded (loading it would raise an OSError about its missing config instead).
    bad = tmp_path / "bad_gold.json"
    bad.write_text(json.dumps([{"id": "g0", "image": None, "conversations": _conversation("Superclasses?", "normal")}]))
    (tmp_path / "empty_model").mkdir()
    with pytest.raises(ValueError, match=r"bad_gold.json: ptb-xl-super: reference #0 names none of the split's labels"):
        evaluate_main(
            ["--model_name_or_path", str(tmp_path / "empty_model"), "--splits", "ptb", "--data_files", str(bad)]
        )


def test_pixel_budget_applies_to_qwen_vl_and_is_skipped_only_where_asked(workspace):
    from types import SimpleNamespace

    from evl_kd_trainer.scripts.common import apply_pixel_budget

    budget = SimpleNamespace(min_pixels=784, max_pixels=4096)
    qwen = apply_pixel_budget(load_processor(workspace / "qwen"), budget)
    assert qwen.image_processor.size["shortest_edge"] == 784 and qwen.image_processor.size["longest_edge"] == 4096
    llava = load_processor(workspace / "llava")
    before = dict(llava.image_processor.size)
    with pytest.raises(ValueError, match="no pixel budget"):
        apply_pixel_budget(llava, budget)
    assert apply_pixel_budget(llava, budget, only_where_supported=True).image_processor.size == before
    # a budget that no evaluated model takes is a mistake, reported before any model loads
    data = str(workspace / "synthetic.json")
    with pytest.raises(ValueError, match="none of the models evaluated is one"):
        evaluate_main(
            ["--model_name_or_path", str(workspace / "llava"), "--splits", "synthetic", "--data_files", data,
             "--max_pixels", "4096", "--progress", "False"]
        )  # fmt: skip
