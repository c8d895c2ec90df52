"""ECG-Bench while training: generate and score held-out splits with the model being trained.

:class:`ECGBenchEvaluator` reads and checks its splits once, when it is built (so a bad file, a missing image
or a gold answer the scorer cannot read fails before the first training step), and at each call generates with
the live model and processor and scores with the code of ``evl-kd evaluate`` (:class:`BatchGenerator`,
:func:`~evl_kd_trainer.eval.runner.score_split`): a number logged at step N is the number ``evl-kd evaluate``
gives for ``checkpoint-N`` with the same ``max_new_tokens`` and ``batch_size``.

:class:`ECGBenchEvalCallback` asks the trainer for an evaluation every ``ecgbench_eval_steps`` steps; the trainer
side (:class:`~evl_kd_trainer.trainer.ecgbench.ECGBenchEvalMixin`) runs the evaluator inside ``evaluate()``, so the
scores join that evaluation's metrics (``metric_for_best_model``, ``load_best_model_at_end``, early stopping) and
its log (every ``report_to`` tracker, ``log_history``).

Under several processes each rank generates a strided share of every split (padded to the same number of
batches, so that ZeRO-3 / FSDP ranks run ``generate`` the same number of times) and the answers are gathered:
every rank then scores the same answers and holds the same metrics.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from evl_kd_trainer.eval.splits import get_split

if TYPE_CHECKING:
    from evl_kd_trainer.eval.generate import Generation
    from evl_kd_trainer.eval.records import EvalRecord, SplitRecords

logger = logging.getLogger(__name__)

#: Per-split counts logged beside the split's metrics: answers nothing was parsed from, answers cut by
#: ``max_new_tokens``.
COUNT_KEYS = ("unparsed", "hit_max_new_tokens")


def ecgbench_metric_keys(split: str, prefix: str = "eval") -> list[str]:
    """The keys one split logs: ``<prefix>_<split>_<metric>`` for its Table 1 metrics, then its counts."""
    spec = get_split(split)
    return [f"{prefix}_{spec.name}_{name}" for name in (*spec.metrics, *COUNT_KEYS)]


@dataclass
class ECGBenchResult:
    """One evaluation: the flat metrics to log, the full scores and the per-sample rows of each split."""

    metrics: dict[str, float]
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class ECGBenchEvaluator:
    """Generate answers for ECG-Bench splits with a live model and score them (see the module docstring).

    Args:
        split_files: ``(split name, data file)`` pairs (:func:`~evl_kd_trainer.eval.splits.resolve_split_files`).
        image_root: folder relative image paths start from; default: each data file's folder.
        max_samples: score only the first N records of each split.
        max_new_tokens: generation budget per answer.
        batch_size: questions per ``generate`` call.
        chat_template: prompt format (``"auto"``, ``"processor"``, a registered name or Jinja text), as
            ``evl-kd evaluate``'s ``chat_templates``.

    Raises:
        FileNotFoundError / ValueError: a missing file or image, a malformed record or an unreadable gold answer,
            naming the file and the record.
    """

    def __init__(
        self,
        split_files: Sequence[tuple[str, str]],
        *,
        image_root: str | None = None,
        max_samples: int | None = None,
        max_new_tokens: int = 1024,
        batch_size: int = 8,
        chat_template: str = "auto",
    ) -> None:
        from evl_kd_trainer.eval.runner import load_split

        if max_new_tokens < 1 or batch_size < 1:
            raise ValueError(f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens}, {batch_size}.")
        self.splits: dict[str, SplitRecords] = {
            get_split(name).name: load_split(
                get_split(name).name, path, image_root=image_root, max_samples=max_samples, missing_images="error"
            )
            for name, path in split_files
        }
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.chat_template = chat_template

    def metric_keys(self, prefix: str = "eval") -> list[str]:
        """Every key a call logs, split by split."""
        return [key for split in self.splits for key in ecgbench_metric_keys(split, prefix)]

    def __call__(
        self,
        model: Any,
        processor: Any,
        *,
        prefix: str = "eval",
        process_index: int = 0,
        num_processes: int = 1,
        gather: Callable[[list[Any]], list[Any]] | None = None,
    ) -> ECGBenchResult:
        """Generate with ``model`` / ``processor`` on every split and score the answers.

        ``model`` is left in eval mode (as ``Trainer.evaluate`` leaves it); the processor's tokenizer gets its
        padding side back (generation pads on the left, training collators may not). With ``num_processes > 1``,
        ``gather`` (``accelerate.utils.gather_object``) concatenates the ranks' lists in rank order.
        """
        from evl_kd_trainer.eval.generate import BatchGenerator, resolve_chat_template
        from evl_kd_trainer.eval.runner import score_split

        if num_processes > 1 and gather is None:
            raise ValueError("Several processes need a `gather` function (accelerate.utils.gather_object).")
        tokenizer = getattr(processor, "tokenizer", processor)
        padding_side = tokenizer.padding_side
        try:
            template = resolve_chat_template(model.config.model_type, processor, self.chat_template)
            generator = BatchGenerator(
                model, processor, template, max_new_tokens=self.max_new_tokens, batch_size=self.batch_size
            )
            result = ECGBenchResult(metrics={})
            for split, loaded in self.splits.items():
                generations = self._generate(generator, loaded.records, process_index, num_processes, gather)
                scores, rows = score_split(split, loaded, generations, [], reference_compat=False)
                result.scores[split], result.rows[split] = scores, rows
                for key, name in zip(ecgbench_metric_keys(split, prefix), (*get_split(split).metrics, *COUNT_KEYS)):
                    result.metrics[key] = float(scores[name])
        finally:
            tokenizer.padding_side = padding_side
        return result

    def _generate(
        self,
        generator: Any,
        records: list[EvalRecord],
        process_index: int,
        num_processes: int,
        gather: Callable[[list[Any]], list[Any]] | None,
    ) -> list[Generation | None]:
        if num_processes == 1:
            generations, _ = generator(records, progress=False)  # unreadable images raise (policy "error")
            return generations
        # Rank r answers records r, r + P, ...; every rank pads its share to the same length with its first
        # record (answer dropped), so all ranks call `generate` equally often (ZeRO-3 / FSDP gather weights in it).
        indices = list(range(process_index, len(records), num_processes))
        share = math.ceil(len(records) / num_processes)
        padded = indices + [indices[0] if indices else 0] * (share - len(indices))
        generations, _ = generator([records[i] for i in padded], progress=False)
        mine = list(zip(indices, generations[: len(indices)]))
        gathered: list[Generation | None] = [None] * len(records)
        for index, generation in gather(mine):
            gathered[index] = generation
        return gathered


def is_ecgbench_step(state: Any, eval_steps: int) -> bool:
    """Whether ECG-Bench runs at ``state.global_step`` under ``ecgbench_eval_steps=eval_steps``: its multiples,
    and the last step (the final model is always scored)."""
    return state.global_step % eval_steps == 0 or state.global_step >= state.max_steps


class ECGBenchEvalCallback(TrainerCallback):
    """Ask for an evaluation every ``eval_steps`` optimizer steps and at the last step (also under
    ``eval_strategy="no"``), as ``DefaultFlowCallback`` does for ``eval_steps``.

    The evaluation itself, ECG-Bench included, is the trainer's (``ECGBenchEvalMixin.evaluate``); this only
    schedules it.
    """

    def __init__(self, eval_steps: int) -> None:
        if eval_steps < 1:
            raise ValueError(f"eval_steps must be >= 1, got {eval_steps}.")
        self.eval_steps = eval_steps

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if is_ecgbench_step(state, self.eval_steps):
            control.should_evaluate = True
        return control
