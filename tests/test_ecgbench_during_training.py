"""ECG-Bench while training (`ecgbench_eval_*`) on tiny models: real steps, real generation, and every logged score
checked against `evl-kd evaluate`'s runner on the checkpoint saved at that step."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import pytest
import torch
import yaml
from datasets import Dataset
from safetensors.torch import load_file

from evl_kd_trainer.eval.arguments import EvalArguments
from evl_kd_trainer.eval.callback import ECGBenchEvaluator
from evl_kd_trainer.eval.runner import run_evaluation
from evl_kd_trainer.eval.splits import resolve_split_files, split_of_file
from evl_kd_trainer.testing import build_tiny_llava_next, build_tiny_qwen3_vl, make_ecg_like_image
from evl_kd_trainer.trainer import EVLDistillConfig, EVLDistillTrainer

QUESTION = (
    "Which rhythm does this ECG show?\nA. sinus rhythm\nB. atrial fibrillation\nC. sinus bradycardia\n"
    "Answer with the option's letter."
)
GOLD = "BBAC"  # a model that always answers "B" scores 50
COMMON = dict(
    per_device_train_batch_size=2,
    bf16=False,
    gradient_checkpointing=False,
    use_cpu=True,
    report_to="none",
    logging_steps=1,
    seed=0,
    disable_tqdm=True,
    ecgbench_eval_max_new_tokens=4,
    ecgbench_eval_batch_size=3,
)


@pytest.fixture(scope="module")
def split_file(tmp_path_factory) -> Path:
    """A 4-question `synthetic` split, named as ECG-Bench names its files (so the path alone gives the split)."""
    root = tmp_path_factory.mktemp("bench")
    (root / "images").mkdir()
    records = []
    for index, letter in enumerate(GOLD):
        make_ecg_like_image(100 + index, size=(32, 32)).save(root / "images" / f"{index}.png")
        conversation = [{"from": "human", "value": QUESTION}, {"from": "gpt", "value": letter}]
        records.append({"id": f"q{index}", "image": f"images/{index}.png", "conversations": conversation})
    path = root / "synthetic-test.json"
    path.write_text(json.dumps(records))
    return path


def letter_dataset(n: int = 8, seed: int = 0) -> Dataset:
    """Training rows that teach the split's question format, always answered "B"."""
    rows: dict[str, list] = {"messages": [], "images": []}
    for index in range(n):
        rows["messages"].append(
            [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]},
                {"role": "assistant", "content": [{"type": "text", "text": "B"}]},
            ]
        )
        rows["images"].append([make_ecg_like_image(seed * 100 + index, size=(32, 32))])
    return Dataset.from_dict(rows)


def make_trainer(tmp_path, split_file, *, teacher=False, eval_dataset=None, **overrides) -> EVLDistillTrainer:
    student = build_tiny_qwen3_vl(seed=0)
    teacher_pair = build_tiny_llava_next(seed=1) if teacher else (None, None)
    values = {
        "output_dir": str(tmp_path / "out"),
        "kd_method": "evl" if teacher else "sft",
        "ecgbench_eval_splits": [str(split_file)],
        **COMMON,
        **overrides,
    }
    return EVLDistillTrainer(
        student[0],
        teacher_model=teacher_pair[0],
        args=EVLDistillConfig(**values),
        train_dataset=letter_dataset(),
        eval_dataset=eval_dataset,
        processing_class=student[1],
        teacher_processing_class=teacher_pair[1],
    )


def bench_entries(trainer, key="eval_synthetic_accuracy") -> list[dict]:
    return [entry for entry in trainer.state.log_history if key in entry]


def predictions(path) -> list[str]:
    return [json.loads(line)["prediction"] for line in Path(path).read_text().splitlines()]


def test_scores_join_the_evaluation_match_evaluate_on_each_checkpoint_and_pick_the_best(tmp_path, split_file):
    trainer = make_trainer(
        tmp_path,
        split_file,
        teacher=True,
        eval_dataset=letter_dataset(n=2, seed=7),
        max_steps=4,
        learning_rate=5e-4,
        eval_strategy="steps",
        eval_steps=2,
        save_strategy="steps",
        save_steps=2,
        load_best_model_at_end=True,
        metric_for_best_model="eval_synthetic_accuracy",
    )
    tokenizer = trainer.processing_class.tokenizer
    padding_side = tokenizer.padding_side
    trainer.train()

    entries = bench_entries(trainer)
    assert [entry["step"] for entry in entries] == [2, 4]
    for entry in entries:  # one log entry per evaluation: the loss evaluation and ECG-Bench side by side
        assert "eval_loss" in entry and entry["eval_synthetic_unparsed"] + entry["eval_synthetic_accuracy"] >= 0
        assert {"eval_synthetic_hit_max_new_tokens", "eval_ecgbench_runtime"} <= set(entry)
    assert tokenizer.padding_side == padding_side  # generation padded on the left; training gets its side back

    out = Path(trainer.args.output_dir)
    for entry in entries:
        step = entry["step"]
        checkpoint = out / f"checkpoint-{step}"
        direct = run_evaluation(
            EvalArguments(
                model_name_or_path=[str(checkpoint)],
                splits=["synthetic"],
                data_files=[str(split_file)],
                max_new_tokens=4,
                batch_size=3,
                output_dir=str(tmp_path / f"direct-{step}"),
                progress=False,
            )
        )
        scores = direct["models"][checkpoint.name]["splits"]["synthetic"]
        assert entry["eval_synthetic_accuracy"] == scores["accuracy"]
        assert entry["eval_synthetic_unparsed"] == scores["unparsed"]
        assert entry["eval_synthetic_hit_max_new_tokens"] == scores["hit_max_new_tokens"]
        during = predictions(out / "ecgbench_predictions" / f"step-{step}" / "synthetic.jsonl")
        after = predictions(tmp_path / f"direct-{step}" / scores["predictions_file"])
        assert during == after and len(during) == len(GOLD)

    values = [entry["eval_synthetic_accuracy"] for entry in entries]
    best_step = entries[values.index(max(values))]["step"]  # the first to reach the maximum (strict improvement)
    assert trainer.state.best_metric == max(values)
    assert trainer.state.best_global_step == best_step
    assert trainer.state.best_model_checkpoint == str(out / f"checkpoint-{best_step}")


def test_without_an_eval_dataset_every_n_steps_and_the_best_checkpoint_is_loaded(tmp_path, split_file):
    # Lower is better for the count of answers cut by the budget: the model stops answering at the budget once it
    # has learnt to answer "B" and stop, which takes a few steps at this learning rate.
    trainer = make_trainer(
        tmp_path,
        split_file,
        max_steps=6,
        learning_rate=3e-4,
        ecgbench_eval_steps=1,
        save_strategy="best",
        load_best_model_at_end=True,
        metric_for_best_model="synthetic_hit_max_new_tokens",
    )
    assert trainer.args.eval_strategy == "no" and trainer.args.greater_is_better is False
    trainer.train()

    entries = bench_entries(trainer, "eval_synthetic_hit_max_new_tokens")
    assert [entry["step"] for entry in entries] == [1, 2, 3, 4, 5, 6]
    assert all("eval_loss" not in entry for entry in entries)
    values = [entry["eval_synthetic_hit_max_new_tokens"] for entry in entries]
    assert len(set(values)) > 1, (
        f"the metric never changed ({values}): the best checkpoint would be trivially the first"
    )
    best_step = entries[values.index(min(values))]["step"]
    assert trainer.state.best_global_step == best_step and trainer.state.best_metric == min(values)
    out = Path(trainer.args.output_dir)
    improved = [entry["step"] for i, entry in enumerate(entries) if values[i] < min(values[:i], default=float("inf"))]
    assert sorted(int(p.split("-")[-1]) for p in glob.glob(str(out / "checkpoint-*"))) == improved

    best = load_file(out / f"checkpoint-{best_step}" / "model.safetensors")
    state = trainer.model.state_dict()
    assert all(torch.equal(state[key], value) for key, value in best.items())  # load_best_model_at_end did load it


def test_tensorboard_receives_the_scores_offline(tmp_path, split_file):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = make_trainer(
        tmp_path,
        split_file,
        max_steps=2,
        learning_rate=5e-4,
        save_strategy="no",
        ecgbench_eval_steps=2,
        report_to=["tensorboard"],
    )
    trainer.train()
    (entry,) = bench_entries(trainer)
    (run,) = glob.glob(str(Path(trainer.args.output_dir) / "runs" / "*"))
    events = EventAccumulator(run)
    events.Reload()
    assert {"eval/synthetic_accuracy", "eval/synthetic_unparsed"} <= set(events.Tags()["scalars"])
    (scalar,) = events.Scalars("eval/synthetic_accuracy")
    assert scalar.step == 2 and scalar.value == pytest.approx(entry["eval_synthetic_accuracy"])


def test_an_eval_strategy_without_eval_dataset_says_how_to_score_ecgbench_alone(tmp_path, split_file):
    with pytest.raises(ValueError, match=r"`eval_strategy='steps'` needs an `eval_dataset`.*`eval_strategy='no'`"):
        make_trainer(tmp_path, split_file, max_steps=2, eval_strategy="steps", eval_steps=2, save_strategy="no")


def test_the_last_step_and_a_call_to_evaluate_outside_training_score_too(tmp_path, split_file):
    trainer = make_trainer(
        tmp_path, split_file, max_steps=3, learning_rate=5e-4, save_strategy="no", ecgbench_eval_steps=2
    )
    trainer.train()
    assert [entry["step"] for entry in bench_entries(trainer)] == [2, 3]  # every 2 steps, and the final model
    metrics = trainer.evaluate()
    assert [entry["step"] for entry in bench_entries(trainer)] == [2, 3, 3]
    assert bench_entries(trainer)[-1]["eval_synthetic_accuracy"] == metrics["eval_synthetic_accuracy"]
    assert predictions(Path(trainer.args.output_dir) / "ecgbench_predictions" / "step-3" / "synthetic.jsonl")


def test_ranks_answer_strided_padded_shares_and_gather_the_same_scores(split_file):
    """The multi-process path in one process: three "ranks" run one after the other with the same model; the
    gather a rank receives is what `accelerate.utils.gather_object` returns (the ranks' lists in rank order)."""
    model, processor = build_tiny_qwen3_vl(seed=0)
    evaluator = ECGBenchEvaluator(resolve_split_files([str(split_file)]), max_new_tokens=4, batch_size=1)
    single = evaluator(model, processor)
    calls: list[int] = []
    generate = model.generate

    def counting_generate(*args, **kwargs):
        calls[-1] += 1
        return generate(*args, **kwargs)

    model.generate = counting_generate
    shares: dict[int, list] = {}
    for rank in (1, 2, 0):  # rank 0 last: its gather sees every share
        calls.append(0)

        def gather(mine, rank=rank):
            shares[rank] = mine
            return [item for r in sorted(shares) for item in shares[r]] if rank == 0 else mine

        result = evaluator(model, processor, process_index=rank, num_processes=3, gather=gather)
    assert [index for index, _ in shares[0]] == [0, 3] and [i for i, _ in shares[1]] == [1]
    assert calls == [2, 2, 2]  # 4 records on 3 ranks: the shares of 1 are padded to 2 (ZeRO-3 needs equal calls)
    assert result.metrics == single.metrics
    assert [row["prediction"] for row in result.rows["synthetic"]] == [
        row["prediction"] for row in single.rows["synthetic"]
    ]


def test_split_files_by_name_or_by_file():
    assert split_of_file("data/ECGBench/ptb-test.json") == "ptb-xl-super"
    assert split_of_file("ECGBench/ecgqa-test/test-00000-of-00002.parquet") == "ecgqa"
    assert split_of_file("data/train.json") is None and split_of_file("csn") is None
    assert resolve_split_files(["ptb-test", "csn"], ["a.json", "b.json"]) == [
        ("ptb-xl-super", "a.json"),
        ("csn", "b.json"),
    ]
    with pytest.raises(ValueError, match=r"cannot tell the split of 'csn': it is a split name: give its file"):
        resolve_split_files(["csn"])
    with pytest.raises(ValueError, match=r"cannot tell the split of 'data/train.json': it is neither"):
        resolve_split_files(["data/train.json"])
    with pytest.raises(ValueError, match="one file per split"):
        resolve_split_files(["csn", "g12ec"], ["a.json"])
    with pytest.raises(ValueError, match=r"lists the split\(s\) \['csn'\] twice"):
        resolve_split_files(["csn-test-no-cot.json", "x/csn.jsonl"])


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"ecgbench_eval_steps": 0}, ValueError, r"`ecgbench_eval_steps` must be >= 1"),
        ({"ecgbench_eval_batch_size": 0}, ValueError, r"`ecgbench_eval_batch_size` must be >= 1"),
        ({"ecgbench_eval_splits": ["nope"]}, ValueError, r"cannot tell the split of 'nope'"),
        (
            {"ecgbench_eval_splits": ["csn"], "ecgbench_eval_data_files": ["/no/such.json"]},
            FileNotFoundError,
            "split 'csn'",
        ),
        ({"ecgbench_eval_splits": None, "ecgbench_eval_data_files": ["a.json"]}, ValueError, "name the splits"),
        ({"ecgbench_eval_image_root": "/no/such/folder"}, FileNotFoundError, "ecgbench_eval_image_root"),
        ({"ecgbench_eval_steps": None}, ValueError, "nothing schedules it"),
        (
            {"metric_for_best_model": "eval_csn_accuracy"},
            ValueError,
            "split 'csn', which `ecgbench_eval_splits` does not",
        ),
        ({"metric_for_best_model": "eval_synthetic_f1"}, ValueError, r"split 'synthetic' logs eval_synthetic_accuracy"),
        ({"metric_for_best_model": "eval_synthetic-test_accuracy"}, ValueError, "here `eval_synthetic_accuracy`"),
        (
            {"metric_for_best_model": "eval_synthetic_accuracy", "eval_strategy": "steps", "eval_steps": 3},
            ValueError,
            r"eval_steps=3\) also evaluates at steps where it is not scored",
        ),
        ({"ecgbench_eval_splits": None, "metric_for_best_model": "eval_csn_accuracy"}, ValueError, "is not set"),
    ],
)
def test_config_errors_name_the_field(tmp_path, split_file, overrides, error, message):
    values = {
        "output_dir": str(tmp_path),
        "use_cpu": True,
        "bf16": False,
        "ecgbench_eval_splits": [str(split_file)],
        "ecgbench_eval_steps": 2,
        **overrides,
    }
    with pytest.raises(error, match=message):
        EVLDistillConfig(**values)


def test_schedules_that_keep_the_best_metric_present_are_accepted(tmp_path, split_file):
    base = {"output_dir": str(tmp_path), "use_cpu": True, "bf16": False, "ecgbench_eval_splits": [str(split_file)]}
    best = {"metric_for_best_model": "eval_synthetic_accuracy", "load_best_model_at_end": True}
    steps = {"eval_strategy": "steps", "eval_steps": 4, "save_steps": 4}
    EVLDistillConfig(**base, **best, **steps)  # ECG-Bench at each evaluation
    EVLDistillConfig(**base, **best, **steps, ecgbench_eval_steps=2)  # every evaluation is a multiple of 2
    config = EVLDistillConfig(**base, **best, ecgbench_eval_steps=2, save_strategy="best")
    assert config.ecgbench_split_files() == [("synthetic", str(split_file))]


def test_sft_script_scores_from_a_recipe(tmp_path, split_file):
    from evl_kd_trainer.scripts.sft import run

    model, processor = build_tiny_qwen3_vl(seed=0)
    model.save_pretrained(tmp_path / "student")
    processor.save_pretrained(tmp_path / "student")
    (tmp_path / "images").mkdir()
    records = []
    for index in range(4):
        make_ecg_like_image(index, size=(32, 32)).save(tmp_path / "images" / f"{index}.png")
        conversation = [{"from": "human", "value": f"<image>\n{QUESTION}"}, {"from": "gpt", "value": "B"}]
        records.append({"id": f"t{index}", "image": f"images/{index}.png", "conversations": conversation})
    (tmp_path / "train.json").write_text(json.dumps(records))
    recipe = {
        "model_name_or_path": str(tmp_path / "student"),
        "dataset_path": str(tmp_path / "train.json"),
        "output_dir": str(tmp_path / "sft"),
        "dtype": "float32",
        "max_steps": 2,
        "learning_rate": 5e-4,
        "save_strategy": "no",
        "ecgbench_eval_splits": ["synthetic"],
        "ecgbench_eval_data_files": [str(split_file)],
        "ecgbench_eval_steps": 1,
        **{key: value for key, value in COMMON.items() if key != "seed"},
    }
    (tmp_path / "sft.yaml").write_text(yaml.safe_dump(recipe))
    assert run(["--recipe", str(tmp_path / "sft.yaml")]) == 0
    history = json.loads((tmp_path / "sft" / "trainer_state.json").read_text())["log_history"]
    assert [entry["step"] for entry in history if "eval_synthetic_accuracy" in entry] == [1, 2]


@pytest.mark.parametrize("name", ["pulse_to_qwen.yaml", "sft_qwen3vl_2b.yaml", "demo/distill.yaml"])
def test_the_recipes_commented_examples_are_valid_settings(name):
    """The commented-out `ecgbench_eval_*` blocks of the recipes work once uncommented (keys, types, splits)."""
    import re

    from trl import ModelConfig

    from evl_kd_trainer.scripts.args import DataArguments
    from evl_kd_trainer.scripts.recipe import validate_recipe
    from evl_kd_trainer.scripts.sft import VLMSFTConfig

    text = (Path(__file__).resolve().parent.parent / "recipes" / name).read_text()
    keys = r"ecgbench_eval_\w+|metric_for_best_model|save_strategy|load_best_model_at_end"
    block = yaml.safe_load("\n".join(re.findall(rf"^# ((?:{keys}): .*)$", text, flags=re.MULTILINE)))
    assert "ecgbench_eval_splits" in block and "ecgbench_eval_steps" in block
    config = VLMSFTConfig if name.startswith("sft") else EVLDistillConfig
    validate_recipe({**yaml.safe_load(text), **block}, (ModelConfig, DataArguments, config), name)
    pairs = resolve_split_files(block["ecgbench_eval_splits"], block.get("ecgbench_eval_data_files"))
    if "metric_for_best_model" in block:
        assert block["metric_for_best_model"].split("_")[1] in [split for split, _ in pairs]


@pytest.mark.distributed
@pytest.mark.parametrize("mode", ["ddp", "zero3"])
def test_two_processes_score_like_evaluate_on_the_checkpoint(tmp_path, split_file, mode):
    """Two CPU ranks (torchrun, gloo): each answers its share, both log the same scores, and those are the
    scores of `evl-kd evaluate` on the checkpoint of that step (under ZeRO-3 too, where generation gathers weights
    and every rank must run `generate` equally often)."""
    from tests.test_distributed import launch, torchrun

    worker = Path(__file__).with_name("ecgbench_ddp_worker.py")
    launch(torchrun(2, worker, str(tmp_path), str(split_file), mode), f"ECG-Bench under {mode} with 2 processes")
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [result["world"] for result in ranks] == [2, 2]
    scored = [[{k: v for k, v in e.items() if k != "eval_ecgbench_runtime"} for e in r["entries"]] for r in ranks]
    (entry,) = scored[0]
    assert scored[1] == scored[0] and entry["step"] == 2  # the same gathered answers, scored alike on both ranks
    checkpoint = tmp_path / "run" / "checkpoint-2"
    direct = run_evaluation(
        EvalArguments(
            model_name_or_path=[str(checkpoint)],
            splits=["synthetic"],
            data_files=[str(split_file)],
            max_new_tokens=4,
            batch_size=1,
            max_samples=3,
            output_dir=str(tmp_path / "direct"),
            progress=False,
        )
    )
    scores = direct["models"][checkpoint.name]["splits"]["synthetic"]
    assert entry["eval_synthetic_accuracy"] == scores["accuracy"]
    during = predictions(tmp_path / "run" / "ecgbench_predictions" / "step-2" / "synthetic.jsonl")
    assert during == predictions(tmp_path / "direct" / scores["predictions_file"]) and len(during) == 3
