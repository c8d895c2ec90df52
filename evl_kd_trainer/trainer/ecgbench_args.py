"""`ECGBenchEvalArguments`: the settings of ECG-Bench evaluation during training, shared by the training configs.

A dataclass mixin: [`EVLDistillConfig`] and the SFT script's `VLMSFTConfig` put it before `SFTConfig` in their
bases, so the same fields (and checks) exist in both and in their recipes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from evl_kd_trainer.eval.callback import COUNT_KEYS, ecgbench_metric_keys
from evl_kd_trainer.eval.splits import SPLITS, resolve_split_files

SPLITS_KEYS = ("ecgbench_eval_splits", "ecgbench_eval_data_files")


@dataclass(repr=False, eq=False)  # a mixin: the config class built from it generates both over all its fields
class ECGBenchEvalArguments:
    r"""
    Generate and score held-out ECG-Bench splits while training, logged as `eval_<split>_<metric>` (`eval_csn_accuracy`,
    `eval_ptb-xl-super_f1`, ...) with each split's answers nothing was parsed from (`eval_<split>_unparsed`) and
    answers cut by the budget (`eval_<split>_hit_max_new_tokens`). The scores join the evaluation's metrics: they go
    to every `report_to` tracker and `log_history`, and `metric_for_best_model="eval_csn_accuracy"` with
    `load_best_model_at_end` keeps the best checkpoint by them. The answers of each evaluation are written to
    `output_dir/ecgbench_predictions/step-N/<split>.jsonl`.

    ECG-Bench runs inside the trainer's evaluations: at each `eval_strategy` evaluation, or, with
    `ecgbench_eval_steps`, every N steps and at the last step (an evaluation is then requested at those steps,
    also under `eval_strategy="no"`, and ECG-Bench runs only there). Without an `eval_dataset`, use `eval_strategy="no"` with
    `ecgbench_eval_steps` (and `save_strategy="best"` for `load_best_model_at_end`).

    Parameters:
        > Parameters that control ECG-Bench evaluation during training

        ecgbench_eval_splits (`list[str]`, *optional*):
            The splits to score: split names (`ptb-xl-super`, `code15`, `ecgqa`, `cpsc2018`, `csn`, `g12ec`,
            `mmmu-ecg`, `synthetic`, or ECG-Bench's `ptb-test`, ...) with one file each in
            `ecgbench_eval_data_files`, as `evl-kd evaluate` takes them; or, without `ecgbench_eval_data_files`,
            the split files themselves, named as ECG-Bench names them (`data/ECGBench/ptb-test.json`,
            `ECGBench/ecgqa-test/test-00000-of-00001.parquet`). `None` (default): no ECG-Bench evaluation.
        ecgbench_eval_data_files (`list[str]`, *optional*):
            One split file (`.parquet`, `.json`, `.jsonl`) per name of `ecgbench_eval_splits`.
        ecgbench_eval_image_root (`str`, *optional*):
            Folder relative image paths start from; default: each data file's folder.
        ecgbench_eval_steps (`int`, *optional*):
            Score every N optimizer steps, and at the last step. `None`: at every evaluation of `eval_strategy`.
        ecgbench_eval_max_samples (`int`, *optional*):
            Score only the first N records of each split (a cheaper estimate; the whole split by default).
        ecgbench_eval_max_new_tokens (`int`, *optional*, defaults to `1024`):
            Generation budget per answer, as `evl-kd evaluate`'s default (PULSE's). Lower it to bound the cost of
            an early model that never stops; answers it cuts are counted in `eval_<split>_hit_max_new_tokens`.
        ecgbench_eval_batch_size (`int`, *optional*, defaults to `8`):
            Questions per generation batch (left-padded, greedy).

    With `metric_for_best_model` an ECG-Bench key and `greater_is_better` unset, the counts
    (`eval_<split>_unparsed`, `eval_<split>_hit_max_new_tokens`) and `hamming_loss` are lower-is-better, the other
    scores greater-is-better.
    """

    ecgbench_eval_splits: list[str] | None = field(
        default=None,
        metadata={"help": "ECG-Bench splits to score while training: names (with ecgbench_eval_data_files) or files."},
    )
    ecgbench_eval_data_files: list[str] | None = field(
        default=None, metadata={"help": "One split file (.parquet/.json/.jsonl) per name of ecgbench_eval_splits."}
    )
    ecgbench_eval_image_root: str | None = field(
        default=None, metadata={"help": "Folder the split files' image paths are relative to."}
    )
    ecgbench_eval_steps: int | None = field(
        default=None, metadata={"help": "Score ECG-Bench every N steps (None: at each eval_strategy evaluation)."}
    )
    ecgbench_eval_max_samples: int | None = field(
        default=None, metadata={"help": "Score only the first N records of each ECG-Bench split."}
    )
    ecgbench_eval_max_new_tokens: int = field(
        default=1024, metadata={"help": "Generation budget per ECG-Bench answer."}
    )
    ecgbench_eval_batch_size: int = field(default=8, metadata={"help": "Questions per ECG-Bench generation batch."})

    def __post_init__(self) -> None:
        self._check_ecgbench_fields()
        metric = self._ecgbench_metric_for_best_model()
        if metric is not None and getattr(self, "greater_is_better", None) is None:
            # `TrainingArguments` would guess "greater" for every name not ending in "loss"; the counts are
            # lower-is-better (`hamming_loss`, the one lower-is-better score, it already gets right).
            self.greater_is_better = not metric[1].endswith(("loss", *COUNT_KEYS))
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        self._check_ecgbench_schedule()

    def ecgbench_split_files(self) -> list[tuple[str, str]]:
        """The ``(split, file)`` pairs to score (empty when ECG-Bench evaluation is off)."""
        if not self.ecgbench_eval_splits:
            return []
        return resolve_split_files(self.ecgbench_eval_splits, self.ecgbench_eval_data_files, keys=SPLITS_KEYS)

    def _check_ecgbench_fields(self) -> None:
        for name in ("ecgbench_eval_steps", "ecgbench_eval_max_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"`{name}` must be >= 1 (or None), got {value}.")
        for name in ("ecgbench_eval_max_new_tokens", "ecgbench_eval_batch_size"):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f"`{name}` must be >= 1, got {value}.")
        if not self.ecgbench_eval_splits:
            if self.ecgbench_eval_data_files:
                raise ValueError(
                    "`ecgbench_eval_data_files` is set but `ecgbench_eval_splits` is not: name the splits."
                )
            return
        for split, path in self.ecgbench_split_files():  # unknown names and count mismatches raise here
            if not os.path.isfile(path):
                raise FileNotFoundError(f"`ecgbench_eval_splits`: no such file for split {split!r}: {path}")
        if self.ecgbench_eval_image_root is not None and not os.path.isdir(self.ecgbench_eval_image_root):
            raise FileNotFoundError(f"`ecgbench_eval_image_root`: no such folder: {self.ecgbench_eval_image_root}")

    def _check_ecgbench_schedule(self) -> None:
        """After `TrainingArguments` resolved its strategies: ECG-Bench must run, and where the best model is
        chosen by an ECG-Bench metric, that metric must exist at every evaluation."""
        if not self.ecgbench_eval_splits:
            metric = self._ecgbench_metric_for_best_model()
            if metric is not None:
                raise ValueError(
                    f"`metric_for_best_model={self.metric_for_best_model!r}` is an ECG-Bench metric, but "
                    "`ecgbench_eval_splits` is not set."
                )
            return
        steps, strategy = self.ecgbench_eval_steps, self.eval_strategy
        if steps is None and strategy == "no":
            raise ValueError(
                "`ecgbench_eval_splits` is set but nothing schedules it: set `ecgbench_eval_steps` (every N steps) or "
                "an `eval_strategy` (ECG-Bench then runs at each evaluation)."
            )
        metric = self._ecgbench_metric_for_best_model()
        if metric is None:
            return
        split, key = metric
        configured = [name for name, _ in self.ecgbench_split_files()]
        if split not in configured:
            raise ValueError(
                f"`metric_for_best_model={self.metric_for_best_model!r}` names the ECG-Bench split {split!r}, which "
                f"`ecgbench_eval_splits` does not score ({', '.join(configured)})."
            )
        if key not in ecgbench_metric_keys(split):
            raise ValueError(
                f"`metric_for_best_model={self.metric_for_best_model!r}`: split {split!r} logs "
                f"{', '.join(ecgbench_metric_keys(split))}."
            )
        if steps is not None and strategy != "no":
            every = self.eval_steps if strategy == "steps" else None
            if not (isinstance(every, int) or (isinstance(every, float) and every.is_integer() and every >= 1)):
                every = None
            if every is None or int(every) % steps:
                raise ValueError(
                    f"`metric_for_best_model={self.metric_for_best_model!r}` is an ECG-Bench metric, scored every "
                    f"`ecgbench_eval_steps={steps}` steps, but `eval_strategy={getattr(strategy, 'value', strategy)!r}` "
                    f"(eval_steps={self.eval_steps}) also evaluates at steps where it is not scored. Use "
                    "`eval_steps` a multiple of `ecgbench_eval_steps`, `ecgbench_eval_steps=None` (score at each "
                    "evaluation), or `eval_strategy='no'` with `save_strategy='best'`."
                )

    def _ecgbench_metric_for_best_model(self) -> tuple[str, str] | None:
        """``(split, key)`` when `metric_for_best_model` is an ECG-Bench key (``eval_<split>_<name>``), else None."""
        metric = getattr(self, "metric_for_best_model", None)
        if not metric:
            return None
        key = metric if metric.startswith("eval_") else f"eval_{metric}"
        # Longest names first: a canonical name may be the start of another (none is today, but `code15` vs a
        # future `code15-full` would be).
        for spec in sorted(SPLITS, key=lambda spec: -len(spec.name)):
            if key.startswith(f"eval_{spec.name}_"):
                return spec.name, key
        for spec in SPLITS:  # an alias (eval_ptb-test_f1) is not what is logged: name the canonical key
            for alias in spec.aliases:
                if key.startswith(f"eval_{alias}_"):
                    raise ValueError(
                        f"`metric_for_best_model={metric!r}`: ECG-Bench metrics are logged under the canonical split "
                        f"name, here `eval_{spec.name}_{key[len(f'eval_{alias}_') :]}`."
                    )
        return None
