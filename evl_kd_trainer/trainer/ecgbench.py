"""`ECGBenchEvalMixin`: ECG-Bench scores as part of a trainer's evaluations (settings: `ECGBenchEvalArguments`).

Why inside ``evaluate()`` and not only in a callback: ``Trainer`` picks the best checkpoint from the dict that
``evaluate()`` returns (``_determine_best_metric``, right before ``_save_checkpoint``), and early stopping reads
the dict that ``on_evaluate`` receives; both are the dict ``Trainer.evaluate`` logs. So the ECG-Bench answers are
generated first, and their metrics are merged into that very dict when it is logged: one log entry per
evaluation, with ``eval_loss`` and ``eval_<split>_<metric>`` side by side, in every ``report_to`` tracker, in
``log_history``, in ``on_evaluate`` and in the returned metrics. With no ``eval_dataset`` there is nothing else
to evaluate: the ECG-Bench metrics are then logged and dispatched alone, as ``Trainer.evaluate`` would.
"""

from __future__ import annotations

import os
import time
from typing import Any

from transformers.utils import logging

from evl_kd_trainer.eval.callback import ECGBenchEvalCallback, ECGBenchEvaluator, is_ecgbench_step

logger = logging.get_logger(__name__)

PREDICTIONS_DIR = "ecgbench_predictions"


class ECGBenchEvalMixin:
    """Trainer mixin (before ``Trainer`` in the bases) running ECG-Bench in evaluations when the args ask for it.

    Reads ``ecgbench_eval_*`` from the trainer's args (:class:`~evl_kd_trainer.trainer.ecgbench_args.
    ECGBenchEvalArguments`); args without those fields leave the trainer as it was.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        config = kwargs.get("args")
        if getattr(config, "ecgbench_eval_splits", None) and kwargs.get("eval_dataset") is None:
            if config.eval_strategy != "no":
                # Trainer refuses this too, without saying how to score ECG-Bench alone.
                raise ValueError(
                    f"`eval_strategy={getattr(config.eval_strategy, 'value', config.eval_strategy)!r}` needs an "
                    "`eval_dataset`, and there is none. To score only the ECG-Bench splits, set `eval_strategy='no'` "
                    "with `ecgbench_eval_steps` (and `save_strategy='best'` for `load_best_model_at_end`)."
                )
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        self.ecgbench_evaluator = None
        self._ecgbench_pending: dict[str, float] | None = None
        split_files = self.args.ecgbench_split_files() if hasattr(self.args, "ecgbench_split_files") else []
        if not split_files:
            return
        # Read and checked now, before any training step: a bad file fails here, naming the file and record.
        self.ecgbench_evaluator = ECGBenchEvaluator(
            split_files,
            image_root=self.args.ecgbench_eval_image_root,
            max_samples=self.args.ecgbench_eval_max_samples,
            max_new_tokens=self.args.ecgbench_eval_max_new_tokens,
            batch_size=self.args.ecgbench_eval_batch_size,
        )
        if self.args.ecgbench_eval_steps is not None:
            self.add_callback(ECGBenchEvalCallback(self.args.ecgbench_eval_steps))

    def _ecgbench_due(self, eval_dataset: Any, metric_key_prefix: str) -> bool:
        # Only the trainer's own evaluation (not `evaluate(other_dataset)` nor `predict`); during training, every
        # `ecgbench_eval_steps` steps and at the last step when set; a call outside training always scores.
        if self.ecgbench_evaluator is None or eval_dataset is not None or metric_key_prefix != "eval":
            return False
        steps = self.args.ecgbench_eval_steps
        return steps is None or not self.is_in_train or is_ecgbench_step(self.state, steps)

    def evaluate(
        self, eval_dataset: Any = None, ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        if not self._ecgbench_due(eval_dataset, metric_key_prefix):
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)  # type: ignore[misc]
        bench = self.ecgbench_evaluate(metric_key_prefix)
        if self.eval_dataset is None:
            self.log(bench)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, bench)
            return bench
        self._ecgbench_pending = bench
        try:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)  # type: ignore[misc]
        finally:
            self._ecgbench_pending = None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self._ecgbench_pending is not None and any(key.startswith("eval_") for key in logs):
            # In place: `Trainer.evaluate` logs its metrics dict, then hands that same dict to `on_evaluate` and
            # returns it, so the ECG-Bench metrics reach the best-model check and early stopping too.
            logs.update(self._ecgbench_pending)
            self._ecgbench_pending = None
        super().log(logs, start_time)  # type: ignore[misc]

    def ecgbench_evaluate(self, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Generate and score every configured split now; the flat ``<prefix>_<split>_<metric>`` metrics.

        The answers go to ``output_dir/ecgbench_predictions/step-N/<split>.jsonl`` (main process).
        """
        from accelerate.utils import gather_object

        from evl_kd_trainer.eval.report import write_predictions

        start = time.time()
        model = self.accelerator.unwrap_model(self.model)  # the PEFT model stays: its adapters must apply
        result = self.ecgbench_evaluator(
            model,
            self.processing_class,
            prefix=metric_key_prefix,
            process_index=self.accelerator.process_index,
            num_processes=self.accelerator.num_processes,
            gather=gather_object,
        )
        if self.args.should_save:
            folder = os.path.join(self.args.output_dir, PREDICTIONS_DIR, f"step-{self.state.global_step}")
            os.makedirs(folder, exist_ok=True)
            for split, rows in result.rows.items():
                write_predictions(os.path.join(folder, f"{split}.jsonl"), rows)
        metrics = dict(result.metrics)
        metrics[f"{metric_key_prefix}_ecgbench_runtime"] = round(time.time() - start, 4)
        logger.info(
            "ECG-Bench at step %d: %s",
            self.state.global_step,
            {key: round(value, 2) for key, value in metrics.items()},
        )
        return metrics
