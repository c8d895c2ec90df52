"""Training from a teacher-feature cache (``teacher_cache_dir``): the teacher is neither loaded nor placed.

The cache (``evl-kd cache-teacher``) holds exactly what the run's method reads. Before any training this module
checks it against the run (fingerprint: teacher weights, processor, template, lengths, layer, positions,
compression; and that every training record is cached), then supplies what the live teacher would: the teacher's
adapter and widths, a collator rendering only the student view and attaching each batch's cached features (read
in the data-loader workers when ``dataloader_num_workers > 0``), and per batch a
:class:`~evl_kd_trainer.trainer.features.TeacherSide` built from those tensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers.utils import logging

from evl_kd_trainer.methods import FeatureRequest
from evl_kd_trainer.trainer.features import TeacherSide

logger = logging.get_logger(__name__)


class CachedTeacher:
    """The cache of one run, opened and checked.

    Args:
        args: the run's ``EVLDistillConfig`` (``teacher_cache_dir`` set).
        teacher_model: the teacher's path (``teacher_model_name_or_path``): its weights are hashed (safetensors
            headers and sampled blocks, not loaded) to make sure the cache is this teacher's. ``None``: the
            teacher saved in the cache is trusted (a warning says so).
        student_processor: the run's student processor.
        teacher_processor: the teacher's processor; defaults to the one saved in the cache.
    """

    def __init__(
        self,
        args: Any,
        teacher_model: Any,
        student_processor: Any,
        teacher_processor: Any,
    ) -> None:
        from evl_kd_trainer.cache.manifest import MANIFEST, TEACHER_DIR
        from evl_kd_trainer.cache.reader import TeacherCacheReader
        from evl_kd_trainer.cache.request import features_for
        from evl_kd_trainer.cache.settings import run_fingerprint
        from evl_kd_trainer.models import load_processor

        directory = Path(args.teacher_cache_dir)
        if not (directory / MANIFEST).is_file():
            raise FileNotFoundError(
                f"teacher_cache_dir={str(directory)!r}: no {MANIFEST} there; build the cache with "
                "`evl-kd cache-teacher --recipe RECIPE --output DIR` (it resumes a partial one)."
            )
        saved_teacher = directory / TEACHER_DIR
        if teacher_processor is None:
            teacher_processor = load_processor(str(saved_teacher))
        if teacher_model is not None and not isinstance(teacher_model, str | Path):
            source = teacher_model  # an in-memory teacher: hashed as it is, never run
        elif teacher_model is not None:
            source = str(teacher_model)
        else:
            logger.warning(
                f"teacher_cache_dir={str(directory)!r} without teacher_model_name_or_path: the teacher's weights cannot "
                "be compared with the ones the cache was built from; the cache's own teacher record is trusted."
            )
            source = None
        reader_probe = TeacherCacheReader(directory)
        if source is None:
            expected = {k: v for k, v in reader_probe.fingerprint.items() if k != "features"}
            # Only what the run reads can be checked: the saved teacher folder holds no weights to fingerprint.
            expected["features"] = features_for(args.kd_method, args).to_dict()
        else:
            expected = run_fingerprint(args, source, teacher_processor, student_processor)
        self.reader = TeacherCacheReader.open(directory, expected_fingerprint=expected, device="cpu")
        self.fingerprint = self.reader.fingerprint
        self.teacher_processor = teacher_processor
        self.directory = directory
        # Records the teacher view dropped at build time are dropped by the collator too, counted.
        self.dropped: list[str] = []
        self._modules_on: torch.device | None = None

    def check_records(self, train_dataset: Any) -> None:
        """Every record of ``train_dataset`` must be cached (``ValueError`` naming the first missing ids). Records
        the teacher view dropped at build time are dropped by the collator too, counted."""
        from evl_kd_trainer.cache.ids import dataset_record_ids

        if train_dataset is not None and hasattr(train_dataset, "__getitem__"):
            self.dropped = self.reader.check(dataset_record_ids(train_dataset))

    @property
    def adapter(self) -> Any:
        return self.reader.adapter

    @property
    def dims(self) -> Any:
        return self.reader.dims

    def collator(self, args: Any, student_processor: Any, max_length: int | None) -> Any:
        """The student view only, escaping the cached teacher's special-token strings as the build did, with each
        batch's cached teacher features attached."""
        from evl_kd_trainer.cache.collator import TeacherCacheCollator
        from evl_kd_trainer.data.collator import DualViewCollator

        student_only = DualViewCollator(
            student_processor,
            max_length=max_length,
            chat_template=args.student_chat_template,
            return_record_ids=True,
            escape_also=(self.teacher_processor,),
        )
        return TeacherCacheCollator(student_only, self.reader)

    def teacher_side(
        self, teacher_inputs: dict[str, Any], record_ids: list[str], request: FeatureRequest, device: torch.device
    ) -> TeacherSide:
        """The batch's teacher features, as :func:`~evl_kd_trainer.trainer.features.live_teacher_side` gives them."""
        from evl_kd_trainer.cache.collator import cached_batch_from_inputs

        cached = cached_batch_from_inputs(teacher_inputs, record_ids).to(device)
        if self._modules_on != device:
            for module in (self.reader.lm_head, self.reader.embed_tokens):
                if module is not None:
                    module.to(device)
            self._modules_on = device
        hidden = cached.hidden
        if hidden is None:  # a top-k cache of a logits-only method: no states, the logits stand in
            hidden = torch.zeros(*cached.input_ids.shape, self.dims.hidden_size, device=device)
        side = TeacherSide(hidden=hidden, adapter=self.adapter)
        if request.visual:
            side.visual, side.visual_mask = cached.padded_visual()
        side.lm_head, side.embed_tokens = self.reader.lm_head, self.reader.embed_tokens
        if request.teacher_logits and cached.topk_logprobs is not None:
            side.logits = cached.logits(vocab_size=self.dims.vocab_size)
        return side

    def card_line(self) -> str:
        """What the model card says of the cache."""
        features = self.reader.features
        return (
            f"teacher features read from a cache (`{self.directory.name}`, compression `{self.reader.spec.kind}`, "
            f"layer {features.hidden_layer}, positions `{features.hidden_positions}`; teacher weights fingerprint "
            f"`{str(self.fingerprint.get('teacher_weights', ''))[:16]}`)"
        )
