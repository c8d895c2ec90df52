"""The embedded default, what `make demo` runs (CPU, no network; README gives its measured duration):

    python examples/demo.py --output_dir demo_output

It drives the real example scripts with the small recipes in `recipes/demo/` (no separate code path):

  0. `evl-kd make-synthetic`: 12-lead ECGs in five rhythm classes, rendered as lead II rhythm strips,
     ECGInstruct-style training records and an ECG-Bench-style multiple-choice test split; the student's
     smaller labelled budget is a class-balanced subset of the teacher's training strips;
  1. tiny random starting checkpoints: a PULSE-like flat LLaVA-NeXT teacher and a Qwen3-VL student;
  2. `examples/sft.py`: SFT of the teacher on all the training strips, then of the student on its subset
     (stage 1 of the paper; as PULSE-7B next to a 2B student, the teacher is larger and saw more data);
  3. `examples/distill.py`: EVL-ECG distillation teacher -> SFT student (stage 2), and the same number of
     steps of plain cross-entropy (`--kd_method sft`) as the fair control; then the EVL-ECG run once more from a
     teacher-feature cache (`evl-kd cache-teacher` runs the teacher once; the distillation never loads it and
     repeats the live run's losses);
  4. `examples/evaluate.py`: the teacher and the students on the held-out split;
  5. `demo_output/report.md`: the results table, per-term loss curves, the Sinkhorn transport plan of one
     sample (paper Figure 2) and the feature spectra (paper Figure 3).

`--compare_methods uld dskd ...` adds the baseline KD methods to the report (off by default: each adds a
training run and an evaluation). `demo_output/summary.json` holds the run's wall time, peak memory and scores;
`--update_readme` writes them into README's demo paragraph.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes" / "demo"
# The four rhythms a glance tells apart, and atrial flutter, which beats like sinus tachycardia: only the sawtooth
# baseline tells them apart, so no model gets every question by counting beats.
CLASSES = ("SB", "NSR", "ST", "AF", "AFL")
# Demo data: lead II rhythm strips of 6 s at 224x64 pixels, the size the tiny models can read. `n_train` strips
# train the teacher; the student's labelled budget is the first STUDENT_STRIPS of them (balanced over the classes).
DATA = {"n_train": 2000, "n_test": 400, "layout": "1x1", "image_size": (224, 64), "duration": 6.0, "seed": 0}
STUDENT_STRIPS = 100
STUDENT_TRAIN = "student_train.json"


def stage(title: str, timings: dict[str, float]):
    """Print a header, time the block."""

    class _Stage:
        def __enter__(self):
            print(f"\n=== {title} ===", flush=True)
            self.start = time.perf_counter()

        def __exit__(self, *exc):
            timings[title] = time.perf_counter() - self.start
            print(f"=== {title}: {timings[title]:.0f} s ===", flush=True)

    return _Stage()


def run_script(main, recipe: str, **overrides: object) -> None:
    argv = ["--recipe", str(RECIPES / recipe)]
    for key, value in overrides.items():
        argv += [f"--{key}", *(map(str, value) if isinstance(value, list | tuple) else [str(value)])]
    code = main(argv)
    if code:
        raise SystemExit(f"{recipe} failed with exit code {code}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", default="demo_output", help="where everything is written")
    parser.add_argument("--compare_methods", nargs="*", default=[], help="baseline KD methods to add to the report")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--update_readme", action="store_true", help="quote this run's figures in README.md")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from evl_kd_trainer.demo import figures
    from evl_kd_trainer.demo.models import write_demo_models
    from evl_kd_trainer.demo.report import comparison_table, write_report
    from evl_kd_trainer.demo.summary import compare_runs_losses, update_readme, write_summary
    from evl_kd_trainer.ecg import make_synthetic_dataset, write_train_subset
    from evl_kd_trainer.scripts import cache_teacher, distill, evaluate, sft

    out = Path(args.output_dir)
    data, models = out / "data", out / "models"
    runs = {name: out / name for name in ("teacher-sft", "student-sft", "student-evl", "student-sft-continued")}
    quiet = {"disable_tqdm": True} if args.quiet else {}
    teacher_data = {"dataset_path": data / "train.json", "image_root": data, **quiet}
    common = {"dataset_path": data / STUDENT_TRAIN, "image_root": data, **quiet}
    timings: dict[str, float] = {}
    start = time.perf_counter()

    with stage("0. synthetic ECG data", timings):
        paths = make_synthetic_dataset(data, classes=CLASSES, **DATA)
        student_train = write_train_subset(data, STUDENT_STRIPS, name=STUDENT_TRAIN)
        print(f"train: {paths['train']} (teacher)  {student_train} (student)  test: {paths['test']}")
    with stage("1. tiny starting checkpoints", timings):
        init = write_demo_models(models, paths["train"], paths["test"])
    with stage("2a. SFT of the teacher (tiny LLaVA-NeXT, flat packing)", timings):
        run_script(
            sft.main,
            "teacher_sft.yaml",
            model_name_or_path=init["teacher"],
            output_dir=runs["teacher-sft"],
            **teacher_data,
        )
    with stage("2b. SFT of the student (tiny Qwen3-VL)", timings):
        run_script(
            sft.main, "student_sft.yaml", model_name_or_path=init["student"], output_dir=runs["student-sft"], **common
        )
    distill_paths = {
        "model_name_or_path": runs["student-sft"],
        "teacher_model_name_or_path": runs["teacher-sft"],
        **common,
    }
    with stage("3a. EVL-ECG distillation teacher -> student", timings):
        run_script(distill.main, "distill.yaml", output_dir=runs["student-evl"], **distill_paths)
    with stage("3b. control: the same steps with cross-entropy only", timings):
        run_script(
            distill.main, "distill.yaml", kd_method="sft", output_dir=runs["student-sft-continued"], **distill_paths
        )
    runs["student-evl-cached"] = out / "student-evl-cached"
    with stage("3c. the same EVL-ECG run from a teacher-feature cache", timings):
        # The teacher runs once over the student's samples (`evl-kd cache-teacher`); the distillation then reads its
        # features and never loads it. fp32 storage of this fp32 teacher is exact: the run must repeat 3a's losses.
        cache_dir = out / "teacher-cache"
        run_script(cache_teacher.main, "distill.yaml", output=cache_dir, compression="fp32", **distill_paths)
        run_script(
            distill.main,
            "distill.yaml",
            teacher_cache_dir=cache_dir,
            output_dir=runs["student-evl-cached"],
            **distill_paths,
        )
        cache_check = compare_runs_losses(runs["student-evl"], runs["student-evl-cached"], cache_dir)
        print(
            f"cached run vs live run: largest loss difference {cache_check['max_abs_loss_diff']:.2e} over "
            f"{cache_check['steps']} logged steps; cache {cache_check['bytes_per_sample']:,} bytes per sample"
        )
    for method in args.compare_methods:
        runs[f"student-{method}"] = out / f"student-{method}"
        with stage(f"3c. baseline {method}", timings):
            run_script(
                distill.main, "distill.yaml", kd_method=method, output_dir=runs[f"student-{method}"], **distill_paths
            )

    names = {
        "teacher": "Teacher (tiny LLaVA-NeXT)",
        "sft": "Student SFT",
        "evl": "Student SFT + EVL-ECG",
        "sft_continued": "Student SFT + SFT (same steps)",
    }
    evaluated = [("teacher-sft", names["teacher"]), ("student-sft", names["sft"]), ("student-evl", names["evl"])]
    evaluated += [("student-sft-continued", names["sft_continued"])]
    evaluated += [(f"student-{m}", f"Student SFT + {m}") for m in args.compare_methods]
    with stage("4. evaluation on the held-out split", timings):
        run_script(
            evaluate.main,
            "evaluate.yaml",
            model_name_or_path=[runs[key] for key, _ in evaluated],
            model_names=[name for _, name in evaluated],
            data_files=[paths["test"]],
            image_root=data,
            output_dir=out / "eval",
            progress=not args.quiet,
        )

    with stage("5. report", timings):
        test_records = json.loads(Path(paths["test"]).read_text())
        from evl_kd_trainer.data.messages import conversations_to_messages

        example = {
            "messages": conversations_to_messages(test_records[0]["conversations"]),
            "images": [str(data / test_records[0]["image"])],
        }
        feats = figures.sample_features(runs["student-evl"], runs["teacher-sft"], [example])
        control = figures.sample_features(runs["student-sft-continued"], runs["teacher-sft"], [example])
        files = {
            "loss_curves": figures.plot_loss_curves(
                {"EVL-ECG": runs["student-evl"], "SFT (same steps)": runs["student-sft-continued"]},
                out / "loss_curves.png",
            ),
            "transport_plan": figures.plot_transport_plan(runs["student-evl"], feats, out / "transport_plan.png"),
            "spectra": figures.plot_spectra(
                {
                    "teacher": figures.singular_values(feats["teacher_hidden"]),
                    "student EVL-ECG": figures.singular_values(feats["student_hidden"]),
                    "student SFT (same steps)": figures.singular_values(control["student_hidden"]),
                },
                out / "spectra.png",
            ),
        }
        rel = {key: str(Path(value).relative_to(out)) for key, value in files.items()}
        rel["per_class"] = "eval/per_class.png"
        settings = {
            "data": f"{DATA['n_train']} training strips x 2 questions for the teacher, {STUDENT_STRIPS} of them for the "
            f"student, {DATA['n_test']} held-out questions, classes {', '.join(CLASSES)}, "
            f"{DATA['image_size'][0]}x{DATA['image_size'][1]} px",
            "teacher": "flat LLaVA-NeXT (Llama 128 wide, CLIP 64 wide with 3 layers), 64 visual tokens per strip, "
            f"{steps_of(runs['teacher-sft'])} SFT steps",
            "student": "Qwen3-VL (96 wide, vision 2 layers), 14 visual tokens per strip, "
            f"{steps_of(runs['student-sft'])} SFT steps, then {steps_of(runs['student-evl'])} of distillation",
            "objective": "(1-a) CE + a (l_m L_mhca + l_r L_rel + l_ot L_ot), a=0.3, l_m=1, l_r=0.03, l_ot=0.1 (Table 4)",
        }
        comparison = None
        if args.compare_methods:
            results = json.loads((out / "eval" / "results.json").read_text())["models"]
            compared = {"evl": (names["evl"], runs["student-evl"])}
            compared["sft (same steps)"] = (names["sft_continued"], runs["student-sft-continued"])
            compared.update({m: (f"Student SFT + {m}", runs[f"student-{m}"]) for m in args.compare_methods})
            comparison = comparison_table(results, compared)
        settings["run"] = (
            f"{(time.perf_counter() - start) / 60:.1f} min before the report, peak memory {peak_memory_gib():.2f} GiB "
            f"(resident set of this process, which runs every stage)"
        )
        report = write_report(
            out, settings=settings, timings=timings, eval_dir=out / "eval", names=names, chance=100 / len(CLASSES),
            figures=rel, comparison=comparison,
        )  # fmt: skip
    total = time.perf_counter() - start
    summary = write_summary(
        out,
        timings,
        total,
        peak_memory_gib(),
        names,
        n_questions=DATA["n_test"],
        chance=100 / len(CLASSES),
        teacher_cache=cache_check,
    )
    if args.update_readme and not update_readme(ROOT / "README.md", summary):
        print("README.md has no demo-results block to update", file=sys.stderr)
    print(
        f"\nDemo finished in {total / 60:.1f} min (peak memory {peak_memory_gib():.2f} GiB). Report: {report.resolve()}"
    )
    return 0


def steps_of(run: Path) -> int:
    """Optimizer steps a finished training run took (its trainer state)."""
    return json.loads((run / "trainer_state.json").read_text())["global_step"]


def peak_memory_gib() -> float:
    """Peak resident set of this process so far (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
