"""`EVLDistillTrainer`: TRL's `SFTTrainer` plus a frozen teacher and the EVL-ECG distillation terms.

Design (paper section 2.4):

- The student's cross-entropy comes from ``SFTTrainer.compute_loss`` itself (fused LM head, its metrics),
  so ``alpha = 0`` is SFT exactly and there is never a second student forward.
- The student's hidden states and visual tokens are captured by forward hooks during that forward. The
  distillation method (aligners, projectors) runs *inside* the wrapped student's forward: its modules are
  registered under the student as ``kd_method`` and the student's ``forward`` is redirected for the
  duration of ``compute_loss``. DDP and DeepSpeed therefore see one forward that uses every trainable
  parameter (so gradients of the aligners are synchronised), and ZeRO-3 gathers the aligners' weights.
- The teacher is frozen, in eval mode, runs under ``no_grad`` and never runs its LM head (unless the
  selected baseline method needs its logits); it is prepared the way TRL prepares teachers.
- Aligner weights are saved beside the student as ``_evl_aligner.safetensors`` (the leading underscore keeps
  them out of ``push_to_hub`` uploads), never inside the student's weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel, ProcessorMixin, TrainingArguments
from transformers.utils import logging
from trl import SFTConfig, SFTTrainer

from evl_kd_trainer.methods import DistillationMethod, DistillFeatures, get_method, load_builtin_methods, logits_at
from evl_kd_trainer.models.base import unwrap_model
from evl_kd_trainer.models.registry import find_family
from evl_kd_trainer.trainer.checkpoints import AtomicCheckpointMixin
from evl_kd_trainer.trainer.config import EVLDistillConfig
from evl_kd_trainer.trainer.nonfinite import NonfiniteGuardMixin, refuse_nonfinite_weights

logger = logging.get_logger(__name__)

ALIGNER_WEIGHTS_NAME = "_evl_aligner.safetensors"
KD_MODULE_NAME = "kd_method"
TEACHER_PREFIX = "teacher_"


# One unwrapping rule for the whole package (PEFT, DDP / DeepSpeed / accelerate, torch.compile); the old name stays.
unwrap_hf_model = unwrap_model


def _check_processor_matches(model: nn.Module, processor: Any, role: str) -> None:
    """Fail early when a processor was built for another model (vocabulary or image token mismatch)."""
    tokenizer = getattr(processor, "tokenizer", processor)
    config = model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    vocab_size = getattr(text_config, "vocab_size", None)
    if vocab_size is not None and len(tokenizer) > vocab_size:
        raise ValueError(
            f"The {role} processor's tokenizer has {len(tokenizer)} tokens but the {role} model's vocabulary has "
            f"{vocab_size}: the processor does not belong to this model ({type(model).__name__})."
        )
    family = find_family(model)
    if family is not None:  # the family's own refusals (e.g. PULSE's flat LLaVA-NeXT in the stock classes)
        family.check_processor(model, processor, role)
    image_token_id = getattr(config, "image_token_id", None)
    if image_token_id is None:
        image_token_id = getattr(config, "image_token_index", None)
    image_token = getattr(processor, "image_token", None)
    if image_token_id is not None and image_token is not None:
        processor_id = tokenizer.convert_tokens_to_ids(image_token)
        if processor_id != image_token_id:
            raise ValueError(
                f"The {role} processor maps its image token {image_token!r} to id {processor_id}, but the {role} "
                f"model expects image token id {image_token_id}: the processor does not belong to this model."
            )


class EVLDistillTrainer(NonfiniteGuardMixin, AtomicCheckpointMixin, SFTTrainer):
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
        from evl_kd_trainer.models import get_adapter, load_model, load_processor

        args = self._coerce_args(args, model)
        load_builtin_methods()
        method_cls: type[DistillationMethod] = get_method(args.kd_method)

        # Student: loaded here (not by SFTTrainer) so that our processor classes are used.
        student_path = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "")
        if isinstance(model, str):
            model = load_model(model, **dict(args.model_init_kwargs or {}))
            args.model_init_kwargs = None
        student_adapter = get_adapter(model)  # unsupported model types fail here, listing the supported ones
        if processing_class is None:
            processing_class = self._default_processor(load_processor, student_path, "student")
        _check_processor_matches(model, processing_class, "student")

        # Teacher: frozen, eval mode, no gradients. An inactive method (alpha = 0, every weight 0, kd_method="sft")
        # is plain SFT: the teacher is then neither loaded nor placed, and the batches carry no teacher view.
        teacher = None
        teacher_adapter = None
        teacher_path = None
        active = method_cls.active_for(args)
        if method_cls.needs_teacher:
            if teacher_model is None:
                teacher_model = args.teacher_model_name_or_path
            if teacher_model is None:
                raise ValueError(
                    f"kd_method={args.kd_method!r} needs a teacher: pass `teacher_model=` or set "
                    "`teacher_model_name_or_path` in the config."
                )
            teacher_path: str | None = (
                teacher_model if isinstance(teacher_model, str) else getattr(teacher_model.config, "_name_or_path", "")
            )
        if method_cls.needs_teacher and not active:
            logger.info(f"kd_method={args.kd_method!r} carries no weight under these settings: plain SFT, no teacher.")
        elif method_cls.needs_teacher:
            if isinstance(teacher_model, str):
                init_kwargs = args.teacher_model_init_kwargs or {}
                if isinstance(init_kwargs, str):
                    import json

                    init_kwargs = json.loads(init_kwargs)
                teacher_model = load_model(teacher_model, **init_kwargs)
            teacher = teacher_model
            teacher_adapter = get_adapter(teacher)
            if teacher_processing_class is None:
                teacher_processing_class = self._default_processor(load_processor, teacher_path, "teacher")
            _check_processor_matches(teacher, teacher_processing_class, "teacher")
            teacher.requires_grad_(False)
            teacher.eval()

        if data_collator is None:
            from evl_kd_trainer.data.collator import DualViewCollator
            from evl_kd_trainer.data.lengths import resolve_max_lengths

            # Unset limits are each model's own context: an over-long sample is cut or dropped (counted) up front.
            max_length, teacher_max_length = resolve_max_lengths(
                args.max_length, args.teacher_max_length, model, teacher
            )
            data_collator = DualViewCollator(
                processing_class,
                teacher_processor=teacher_processing_class if teacher is not None else None,
                max_length=max_length,
                teacher_max_length=teacher_max_length,
                chat_template=args.student_chat_template,
                teacher_chat_template=args.teacher_chat_template,
            )
        # The collator needs the raw `messages`/`images` columns.
        args.remove_unused_columns = False

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

        # The method's modules live under the student so DDP/DeepSpeed treat them as part of its forward.
        hf_student = unwrap_hf_model(self.model)
        student_dims = student_adapter.dims
        teacher_dims = teacher_adapter.dims if teacher is not None else student_dims
        method = method_cls(args, student_dims, teacher_dims)
        self._check_layers(method)
        self.kd_method = method
        if method.is_active():
            method.to(next(hf_student.parameters()).device)
            hf_student.add_module(KD_MODULE_NAME, method)
        self._kd_hf_student = hf_student
        self._pending_terms: dict[str, torch.Tensor] | None = None
        # Non-finite losses and updates: `NonfiniteGuardMixin` (`nonfinite_kd_action`, counted in
        # `skipped_nonfinite_steps`).

        # An inactive method (alpha = 0, ...) never reads the teacher: do not spend memory placing it.
        self.teacher_model = self._prepare_teacher(teacher) if teacher is not None and method.is_active() else None
        self._teacher_name = teacher_path  # recorded in the model card even when an inactive method left it unloaded

    # ----------------------------------------------------------------------------------------------- setup
    @staticmethod
    def _coerce_args(args: Any, model: Any) -> EVLDistillConfig:
        if args is None:
            name = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "") or "student"
            return EVLDistillConfig(output_dir=f"{Path(str(name)).name}-EVL")
        if isinstance(args, EVLDistillConfig):
            return args
        if isinstance(args, TrainingArguments):
            # Drop-in use: an SFTConfig from an existing script keeps all its values; the distillation fields
            # take the paper's defaults.
            # (`to_dict` would mask every `*_token` field, so read the fields themselves.)
            known = {f.name for f in dataclasses.fields(EVLDistillConfig) if f.init}
            values = {f.name: getattr(args, f.name) for f in dataclasses.fields(args) if f.init and f.name in known}
            return EVLDistillConfig(**values)
        raise TypeError(f"`args` must be an EVLDistillConfig, SFTConfig or TrainingArguments, got {type(args)}.")

    @staticmethod
    def _default_processor(load_processor: Any, path: str, role: str) -> Any:
        if not path or not os.path.exists(path) and "/" not in path:
            raise ValueError(
                f"No {role} processor was given and the {role} model has no saved path to load one from: pass "
                f"`{'processing_class' if role == 'student' else 'teacher_processing_class'}=`."
            )
        return load_processor(path)

    def _check_layers(self, method: DistillationMethod) -> None:
        needs_final = method.needs_student_logits or method.needs_teacher_logits
        if needs_final and (self.args.student_hidden_layer != -1 or self.args.teacher_hidden_layer != -1):
            raise ValueError(
                f"kd_method={self.args.kd_method!r} reads logits, which come from the final layer: leave "
                "`student_hidden_layer` and `teacher_hidden_layer` at -1."
            )

    def _prepare_teacher(self, teacher: nn.Module) -> nn.Module:
        """Place the teacher the way TRL's distillation trainers do: ZeRO-3 kept, other stages inference-only."""
        if self.is_deepspeed_enabled:
            from trl.models.utils import prepare_deepspeed

            return prepare_deepspeed(teacher, self.accelerator)
        if self.is_fsdp_enabled:
            from trl.models.utils import prepare_fsdp

            return prepare_fsdp(teacher, self.accelerator)
        return self.accelerator.prepare_model(teacher, evaluation_mode=True)

    # ------------------------------------------------------------------------------------------- optimizer
    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """Student parameters as ``Trainer`` groups them; the method's modules in their own groups at
        ``aligner_learning_rate`` (DSKD: ``dskd_projector_lr``)."""
        from evl_kd_trainer.trainer.optim import create_optimizer_with_own_lr, projector_name_patterns

        kd_params = list(self.kd_method.parameters()) if self._kd_active() else []
        # DSKD's projectors have their own learning rate in its paper; every other method's modules use the
        # aligner ("projector") learning rate of the paper's Tables 2-3.
        aligner_lr = self.args.dskd_projector_lr if self.args.kd_method == "dskd" else self.args.aligner_learning_rate
        groups = [(kd_params, aligner_lr)]
        if self.args.projector_learning_rate is not None:
            opt_model = self.model if model is None else model
            kd_ids = {id(p) for p in kd_params}
            patterns = projector_name_patterns(opt_model)
            projector = [
                p for n, p in opt_model.named_parameters() if id(p) not in kd_ids and any(k in n for k in patterns)
            ]
            groups.append((projector, self.args.projector_learning_rate))
        return create_optimizer_with_own_lr(self, model, *groups)

    # -------------------------------------------------------------------------------------------- the loss
    def _kd_active(self) -> bool:
        # An inactive method (alpha = 0, or a baseline whose own weight is 0) is plain SFT: no teacher forward.
        return self.teacher_model is not None and self.kd_method.is_active()

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        teacher_inputs = {k[len(TEACHER_PREFIX) :]: inputs.pop(k) for k in list(inputs) if k.startswith(TEACHER_PREFIX)}
        student_response_mask = inputs.pop("response_mask", None)
        teacher_response_mask = teacher_inputs.pop("response_mask", None)
        teacher_inputs.pop("labels", None)
        if not self._kd_active():
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            loss = (result[0] if return_outputs else result).detach()
            self._handle_nonfinite(loss, {})  # raises under "error"; under "skip" the update is dropped
            # Logged as in a distillation run, so an SFT control's curves sit beside the distilled ones.
            steps = self.current_gradient_accumulation_steps if num_items_in_batch is not None else 1
            self._log_terms(loss * steps, {})
            return result

        if student_response_mask is None:
            student_response_mask = inputs["labels"] != -100
        if teacher_response_mask is None:
            raise ValueError("The batch has no `teacher_response_mask`: use DualViewCollator (or a collator like it).")
        teacher_store = self._teacher_forward(teacher_inputs)
        context = {
            "student_attention_mask": inputs["attention_mask"].bool(),
            "student_response_mask": student_response_mask.bool(),
            "student_input_ids": inputs["input_ids"],
            "teacher_attention_mask": teacher_inputs["attention_mask"].bool(),
            "teacher_response_mask": teacher_response_mask.bool(),
            "teacher_input_ids": teacher_inputs["input_ids"],
            "teacher_store": teacher_store,
        }
        self._pending_terms = None
        with self._redirect_student_forward(context):
            result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        ce_loss, outputs = result if return_outputs else (result, None)
        terms, self._pending_terms = self._pending_terms, None
        if terms is None:
            raise RuntimeError("The distillation terms were not computed: the student's forward was not redirected.")

        # With `num_items_in_batch`, Trainer leaves gradient accumulation to the loss (CE is normalised over the
        # whole accumulated batch), so per-micro-batch means are averaged over the accumulation steps, like TRL
        # does for the MoE auxiliary loss.
        steps = self.current_gradient_accumulation_steps if num_items_in_batch is not None else 1
        scaled = {name: value / steps for name, value in terms.items()}
        total = self.kd_method.total_loss(ce_loss, scaled)
        if self._handle_nonfinite(ce_loss, terms):  # raises under "error"
            # "skip": the whole update is dropped; no gradient from this micro-batch, but its real (non-finite)
            # loss is what gets logged.
            total = total.detach() + ce_loss * 0.0
        self._log_terms(ce_loss.detach() * steps, terms)
        return (total, outputs) if return_outputs else total

    def _teacher_forward(self, teacher_inputs: dict[str, Any]) -> Any:
        from evl_kd_trainer.models.capture import teacher_features

        with torch.no_grad():
            return teacher_features(
                self.teacher_model,
                self.teacher_adapter,
                teacher_inputs,
                hidden_layer=self.args.teacher_hidden_layer,
                visual=self.kd_method.needs_visual,
            )

    @contextlib.contextmanager
    def _redirect_student_forward(self, context: dict[str, Any]) -> Iterator[None]:
        """Run the method right after the student's own forward, inside any DDP/DeepSpeed wrapper."""
        from evl_kd_trainer.models.capture import capture_features

        target = self._kd_hf_student
        had_instance_forward = "forward" in target.__dict__
        inner_forward = target.forward
        trainer = self

        def forward_with_distillation(*args: Any, **kwargs: Any) -> Any:
            if trainer._pending_terms is not None:
                # SFTTrainer runs a second, no-grad forward for its metrics when the loss needs full logits
                # (`compute_loss_func`, label smoothing) or outputs are asked for: the terms of the first forward,
                # the one with gradients, stand; the extra forward is the student's own.
                return inner_forward(*args, **kwargs)
            with capture_features(
                target,
                trainer.student_adapter,
                hidden_layer=trainer.args.student_hidden_layer,
                visual=trainer.kd_method.needs_visual,
            ) as store:
                outputs = inner_forward(*args, **kwargs)
            features = trainer._build_features(store, context)
            terms = trainer.kd_method(features)
            trainer._pending_terms = terms
            if isinstance(outputs, dict) and torch.is_grad_enabled():
                # DDP with find_unused_parameters searches the forward's *outputs* for the parameters in use;
                # the terms are not among them, so the aligners would be declared unused and their gradients
                # would then arrive in backward ("marked ready twice"). An exact, NaN-proof zero built from
                # empty slices of the method's parameters connects them to the output through `loss`: TRL's CE
                # reads the per-token log-probs, and when the forward computed no loss (label smoothing,
                # `compute_loss_func`: they read the logits) the field holds that zero. (DDP rebuilds the output
                # class from its fields, so no new field can carry it.)
                anchor = sum(p.reshape(-1)[:0].sum() for p in trainer.kd_method.parameters())
                loss = outputs.get("loss")
                outputs["loss"] = anchor if loss is None else loss + anchor
            return outputs

        target.forward = forward_with_distillation
        try:
            yield
        finally:
            if had_instance_forward:
                target.forward = inner_forward
            else:
                del target.forward

    def _build_features(self, student_store: Any, context: dict[str, Any]) -> DistillFeatures:
        teacher_store = context["teacher_store"]
        method = self.kd_method
        features = DistillFeatures(
            student_hidden=student_store.hidden,
            student_attention_mask=context["student_attention_mask"],
            student_response_mask=context["student_response_mask"],
            teacher_hidden=teacher_store.hidden,
            teacher_attention_mask=context["teacher_attention_mask"],
            teacher_response_mask=context["teacher_response_mask"],
            student_input_ids=context["student_input_ids"],
            teacher_input_ids=context["teacher_input_ids"],
            student_image_mask=self.student_adapter.image_token_mask(context["student_input_ids"]),
            teacher_image_mask=self.teacher_adapter.image_token_mask(context["teacher_input_ids"]),
        )
        if method.needs_visual:
            features.student_visual, features.student_visual_mask = student_store.padded_visual()
            features.teacher_visual, features.teacher_visual_mask = teacher_store.padded_visual()
        student_lm_head = self.student_adapter.get_lm_head(self._kd_hf_student)
        teacher_lm_head = self.teacher_adapter.get_lm_head(unwrap_hf_model(self.teacher_model))
        features.student_lm_head = student_lm_head
        features.teacher_lm_head = teacher_lm_head
        features.student_embed_tokens = self._kd_hf_student.get_input_embeddings()
        features.teacher_embed_tokens = unwrap_hf_model(self.teacher_model).get_input_embeddings()
        # Each LM head runs once, only where the method reads logits (the answer positions for the logit baselines).
        if method.needs_student_logits:
            positions = method.logit_positions(features, "student")
            features.student_logits, features.student_logits_mask = logits_at(
                student_lm_head, student_store.hidden, positions
            )
        if method.needs_teacher_logits:
            positions = method.logit_positions(features, "teacher")
            with torch.no_grad():
                features.teacher_logits, features.teacher_logits_mask = logits_at(
                    teacher_lm_head, teacher_store.hidden, positions
                )
        return features

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

    # ------------------------------------------------------------------------------------- save and resume
    def _split_state_dict(self, state_dict: dict[str, torch.Tensor]) -> tuple[dict, dict]:
        marker = f"{KD_MODULE_NAME}."
        student, aligner = {}, {}
        for key, value in state_dict.items():
            if key.startswith(marker) or f".{marker}" in key:
                aligner[key.split(marker, 1)[1]] = value
            else:
                student[key] = value
        return student, aligner

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if state_dict is None:
            state_dict = self.model.state_dict()
        refuse_nonfinite_weights(state_dict, output_dir)  # before anything is written
        student_state, aligner_state = self._split_state_dict(state_dict)
        super()._save(output_dir, state_dict=student_state)
        if self.args.should_save and aligner_state:
            tensors = {k: v.detach().contiguous().cpu() for k, v in aligner_state.items()}
            save_file(tensors, os.path.join(output_dir, ALIGNER_WEIGHTS_NAME), metadata={"format": "pt"})

    def _resume_extra_files(self) -> list[str]:
        # What `AtomicCheckpointMixin` requires of a checkpoint beyond Trainer's files (the DeepSpeed checkpoint
        # holds the whole module, aligners included).
        trained = self._kd_active() and len(list(self.kd_method.parameters())) > 0
        return [ALIGNER_WEIGHTS_NAME] if trained and not self.is_deepspeed_enabled else []

    def _issue_warnings_after_load(self, load_result: Any) -> None:
        # The aligners are restored from their own file just after: their absence from the student's weights
        # is expected and must not be reported as missing keys.
        marker = f"{KD_MODULE_NAME}."
        missing = getattr(load_result, "missing_keys", None)
        if missing:
            load_result.missing_keys[:] = [k for k in missing if marker not in k]
        super()._issue_warnings_after_load(load_result)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, ALIGNER_WEIGHTS_NAME)
        if self.is_deepspeed_enabled:
            return  # the DeepSpeed checkpoint holds the whole module, aligners included
        if not os.path.isfile(path):
            if self._resume_extra_files() and not self.args.allow_partial_resume:
                raise FileNotFoundError(
                    f"Checkpoint {resume_from_checkpoint} has no {ALIGNER_WEIGHTS_NAME}: the aligner weights "
                    "cannot be restored."
                )
            return
        try:
            state = load_file(path, device=str(next(self.kd_method.parameters()).device))
        except Exception as err:  # safetensors raises its own error type for a truncated header or data
            raise OSError(
                f"{path}: cannot read the aligner weights ({err}); the file is truncated or corrupt."
            ) from err
        self.kd_method.load_state_dict(state)

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
