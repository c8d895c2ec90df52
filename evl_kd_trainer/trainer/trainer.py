"""`EVLDistillTrainer`: TRL's `SFTTrainer` plus a frozen teacher and the EVL-ECG distillation terms.

Design (paper section 2.4):

- The student's cross-entropy comes from ``SFTTrainer.compute_loss`` itself (fused LM head, its metrics),
  so ``alpha = 0`` is SFT exactly and there is never a second student forward.
- The distillation method (:mod:`evl_kd_trainer.methods`) says what it reads (a ``FeatureRequest``); the trainer
  builds nothing else. Its modules run inside the wrapped student's forward (:mod:`.interception`), which also
  captures the student's features through hooks and hands the terms back.
- The teacher (:mod:`.teacher`) is frozen, in eval mode, runs under ``no_grad`` and never runs its LM head over
  the sequence; it is placed the way TRL places teachers. An inactive method (``alpha = 0``, ``kd_method="sft"``)
  neither loads nor places it.
- The method's weights are saved beside the student (:mod:`.method_weights`), never inside its weights; non-finite
  losses and updates follow ``nonfinite_kd_action`` (:mod:`.nonfinite`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, ProcessorMixin, TrainingArguments
from transformers.utils import logging
from trl import SFTConfig, SFTTrainer

from evl_kd_trainer.data.lengths import resolve_max_lengths
from evl_kd_trainer.methods import DistillationMethod, DistillFeatures, get_method
from evl_kd_trainer.models.base import unwrap_model
from evl_kd_trainer.trainer.checkpoints import AtomicCheckpointMixin
from evl_kd_trainer.trainer.config import EVLDistillConfig, as_distill_config
from evl_kd_trainer.trainer.ecgbench import ECGBenchEvalMixin
from evl_kd_trainer.trainer.features import TeacherSide, build_features, live_teacher_side
from evl_kd_trainer.trainer.interception import intercept_student_forward
from evl_kd_trainer.trainer.method_weights import ALIGNER_WEIGHTS_NAME, KD_MODULE_NAME, MethodWeightsMixin
from evl_kd_trainer.trainer.nonfinite import NonfiniteGuardMixin
from evl_kd_trainer.trainer.teacher import (
    check_processor_matches,
    default_processor,
    prepare_teacher,
    resolve_teacher,
    teacher_path_of,
)

logger = logging.get_logger(__name__)

TEACHER_PREFIX = "teacher_"
__all__ = ["ALIGNER_WEIGHTS_NAME", "KD_MODULE_NAME", "TEACHER_PREFIX", "EVLDistillTrainer", "unwrap_hf_model"]

# One unwrapping rule for the whole package (PEFT, DDP / DeepSpeed / accelerate, torch.compile); the old name stays.
unwrap_hf_model = unwrap_model


class EVLDistillTrainer(ECGBenchEvalMixin, NonfiniteGuardMixin, MethodWeightsMixin, AtomicCheckpointMixin, SFTTrainer):
    """Distil a frozen teacher VLM into a student VLM with the EVL-ECG objective (or a baseline method).

    Args:
        model: the student, a model or a path / Hub id.
        teacher_model: the teacher, a model or a path; defaults to ``args.teacher_model_name_or_path``.
        args: an :class:`EVLDistillConfig` (an ``SFTConfig`` / ``TrainingArguments`` is converted).
        data_collator: defaults to :class:`~evl_kd_trainer.data.DualViewCollator` over both processors.
        train_dataset / eval_dataset: TRL ``messages`` + ``images`` datasets.
        processing_class: the student's processor; defaults to the one saved with the student.
        teacher_processing_class: the teacher's processor; defaults to the one saved with the teacher.
        peft_config: a PEFT config for the student (LoRA); the aligners still train in full.
        **kwargs: anything else ``SFTTrainer`` takes (callbacks, optimizers, ...).
    """

    _tag_names = ["trl", "sft", "evl-kd", "knowledge-distillation", "evl-ecg"]
    _name = "EVL-ECG"

    def __init__(
        self,
        model: str | PreTrainedModel,
        teacher_model: str | PreTrainedModel | None = None,
        args: EVLDistillConfig | SFTConfig | TrainingArguments | None = None,
        data_collator: Any = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: ProcessorMixin | None = None,
        teacher_processing_class: ProcessorMixin | None = None,
        peft_config: Any = None,
        **kwargs: Any,
    ) -> None:
        from evl_kd_trainer.models import get_adapter, load_model

        args = as_distill_config(args, model)
        method_cls: type[DistillationMethod] = get_method(args.kd_method)
        method_cls.check_args(args)  # again: fields may have changed since the config was built
        request = method_cls.request(args)
        active = method_cls.active_for(args)

        # Student: loaded here (not by SFTTrainer) so that our processor classes are used.
        student_path = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "")
        if isinstance(model, str):
            model = load_model(model, **dict(args.model_init_kwargs or {}))
            args.model_init_kwargs = None
        student_adapter = get_adapter(model)  # unsupported model types fail here, listing the supported ones
        if processing_class is None:
            processing_class = default_processor(student_path, "student")
        check_processor_matches(model, processing_class, "student")

        # Teacher: an inactive method (alpha = 0, every weight 0, kd_method="sft") is plain SFT, so the teacher is
        # then neither loaded nor placed, and the batches carry no teacher view.
        if request.teacher and teacher_model is None:
            teacher_model = args.teacher_model_name_or_path
        source = resolve_teacher(args, request, active, teacher_model, teacher_processing_class, processing_class)
        teacher, teacher_processing_class, teacher_adapter, cache = source
        if cache is not None:  # checked before anything else is built: a cache of other settings or records fails
            cache.check_records(train_dataset)
        if data_collator is None and cache is not None:
            max_length, _ = resolve_max_lengths(args.max_length, None, model, None)
            data_collator = cache.collator(args, processing_class, max_length)
        elif data_collator is None:
            data_collator = self._default_collator(args, model, processing_class, teacher, teacher_processing_class)
        args.remove_unused_columns = False  # the collator needs the raw `messages` / `images` columns

        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            peft_config=peft_config,
            **kwargs,
        )
        if hasattr(self.data_collator, "set_fallback_dataset"):
            # A batch whose every sample is dropped (bad images, over-long) is replaced, not fatal mid-epoch.
            self.data_collator.set_fallback_dataset(self.train_dataset)
        self.teacher_processing_class = teacher_processing_class
        self.student_adapter = student_adapter
        self.teacher_adapter = teacher_adapter
        self.kd_request = request

        # The method's modules live under the student so DDP/DeepSpeed treat them as part of its forward.
        hf_student = unwrap_model(self.model)
        self.teacher_cache = cache
        teacher_dims = teacher_adapter.dims if teacher_adapter is not None else student_adapter.dims
        self.kd_method = method_cls(args, student_adapter.dims, teacher_dims)
        if self.kd_method.is_active():
            self.kd_method.to(next(hf_student.parameters()).device)
            hf_student.add_module(KD_MODULE_NAME, self.kd_method)
        self._kd_hf_student = hf_student
        self.teacher_model = prepare_teacher(self, teacher) if teacher is not None else None
        # Recorded in the model card even when an inactive method left the teacher unloaded.
        self._teacher_name = teacher_path_of(teacher_model) if request.teacher else None

    # ----------------------------------------------------------------------------------------------- setup
    @staticmethod
    def _default_collator(args: Any, model: nn.Module, processor: Any, teacher: Any, teacher_processor: Any) -> Any:
        from evl_kd_trainer.data.collator import DualViewCollator

        # Unset limits are each model's own context: an over-long sample is cut or dropped (counted) up front.
        max_length, teacher_max_length = resolve_max_lengths(args.max_length, args.teacher_max_length, model, teacher)
        return DualViewCollator(
            processor,
            teacher_processor=teacher_processor if teacher is not None else None,
            max_length=max_length,
            teacher_max_length=teacher_max_length,
            chat_template=args.student_chat_template,
            teacher_chat_template=args.teacher_chat_template,
        )

    # ------------------------------------------------------------------------------------------- optimizer
    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """Student parameters as ``Trainer`` groups them; the method's parameter groups at their own learning rates
        (``aligner_learning_rate``; DSKD: ``dskd_projector_lr``); the student's projector at
        ``projector_learning_rate`` when set."""
        from evl_kd_trainer.trainer.optim import create_optimizer_with_own_lr, projector_name_patterns

        groups = self.kd_method.parameter_groups() if self._kd_active() else []
        if self.args.projector_learning_rate is not None:
            opt_model = self.model if model is None else model
            kd_ids = {id(p) for params, _ in groups for p in params}
            patterns = projector_name_patterns(opt_model)
            projector = [
                p for n, p in opt_model.named_parameters() if id(p) not in kd_ids and any(k in n for k in patterns)
            ]
            groups.append((projector, self.args.projector_learning_rate))
        return create_optimizer_with_own_lr(self, model, *groups)

    # -------------------------------------------------------------------------------------------- the loss
    def _kd_active(self) -> bool:
        # An inactive method (alpha = 0, or a baseline whose own weight is 0) is plain SFT: no teacher forward.
        teacher = self.teacher_model is not None or self.teacher_cache is not None
        return teacher and self.kd_method.is_active()

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        teacher_inputs = {k[len(TEACHER_PREFIX) :]: inputs.pop(k) for k in list(inputs) if k.startswith(TEACHER_PREFIX)}
        student_response_mask = inputs.pop("response_mask", None)
        record_ids = inputs.pop("record_ids", None)  # (a teacher-cache batch) never reaches the student
        teacher_response_mask = teacher_inputs.pop("response_mask", None)
        teacher_inputs.pop("labels", None)
        # With `num_items_in_batch`, Trainer leaves gradient accumulation to the loss (CE is normalised over the
        # whole accumulated batch), so per-micro-batch means are averaged over the accumulation steps, like TRL
        # does for the MoE auxiliary loss.
        steps = self.current_gradient_accumulation_steps if num_items_in_batch is not None else 1
        if not self._kd_active():
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            loss = (result[0] if return_outputs else result).detach()
            self._handle_nonfinite(loss, {})  # raises under "error"; under "skip" the update is dropped
            self._log_terms(loss * steps, {})  # logged as in a distillation run: an SFT control's curves sit beside
            return result

        if student_response_mask is None:
            student_response_mask = inputs["labels"] != -100
        if teacher_response_mask is None:
            raise ValueError("The batch has no `teacher_response_mask`: use DualViewCollator (or a collator like it).")
        teacher = self._teacher_forward(teacher_inputs, record_ids, teacher_response_mask)
        masks = {
            "student_attention_mask": inputs["attention_mask"].bool(),
            "student_response_mask": student_response_mask.bool(),
            "student_input_ids": inputs["input_ids"],
            "teacher_attention_mask": teacher_inputs["attention_mask"].bool(),
            "teacher_response_mask": teacher_response_mask.bool(),
            "teacher_input_ids": teacher_inputs["input_ids"],
        }
        with intercept_student_forward(
            self._kd_hf_student,
            self.student_adapter,
            self.kd_method,
            self.kd_request,
            lambda store: self._build_features(store, teacher, masks),
        ) as intercepted:
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        ce_loss, outputs = result if return_outputs else (result, None)
        terms = intercepted.terms
        if terms is None:
            raise RuntimeError("The distillation terms were not computed: the student's forward was not redirected.")

        total = self.kd_method.total_loss(ce_loss, {name: value / steps for name, value in terms.items()})
        if self._handle_nonfinite(ce_loss, terms):  # raises under "error"
            # "skip": the whole update is dropped; no gradient from this micro-batch, but its real (non-finite)
            # loss is what gets logged.
            total = total.detach() + ce_loss * 0.0
        self._log_terms(ce_loss.detach() * steps, terms)
        return (total, outputs) if return_outputs else total

    def _teacher_forward(self, teacher_inputs: dict[str, Any], record_ids: Any = None, response_mask: Any = None):
        if self.teacher_cache is not None:
            cached = {**teacher_inputs, "response_mask": response_mask}
            return self.teacher_cache.teacher_side(cached, record_ids, self.kd_request, response_mask.device)
        return live_teacher_side(self.teacher_model, self.teacher_adapter, teacher_inputs, self.kd_request)

    def _build_features(self, student_store: Any, teacher: TeacherSide, masks: dict[str, Any]) -> DistillFeatures:
        return build_features(
            self.kd_method, self.kd_request, student_store, self._kd_hf_student, self.student_adapter, teacher, masks
        )

    def _log_terms(self, ce_loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        mode = "train" if self.model.training else "eval"
        values = {"ce_loss": ce_loss, **{k: v.detach() for k, v in terms.items() if k != "kd_loss"}}
        for name, value in values.items():
            value = self.accelerator.gather_for_metrics(value.float().reshape(1)).mean().item()
            if math.isfinite(value):
                self._metrics[mode][name].append(value)
        # Samples the collator cut or dropped so far (in this process; with dataloader workers each worker keeps
        # its own count and this stays 0): nothing a user wrote is skipped without a count in the logs.
        stats = getattr(self.data_collator, "stats", None)
        if isinstance(stats, dict) and (stats.get("dropped") or stats.get("truncated")):
            self._metrics[mode]["collator_dropped"] = [float(stats.get("dropped", 0))]
            self._metrics[mode]["collator_truncated"] = [float(stats.get("truncated", 0))]

    # ----------------------------------------------------------------------------------------- model card
    def create_model_card(
        self,
        model_name: str | None = None,
        dataset_name: str | None = None,
        tags: str | list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Write ``README.md``: base student, teacher (name and revision), method and weights, datasets,
        evaluation metrics when present, and tags."""
        if not self.is_world_process_zero():
            return
        from evl_kd_trainer.trainer.model_card import build_model_card

        card = build_model_card(
            trainer=self,
            model_name=model_name or Path(self.args.output_dir).name,
            dataset_name=dataset_name,
            tags=tags,
        )
        card.save(os.path.join(self.args.output_dir, "README.md"))
