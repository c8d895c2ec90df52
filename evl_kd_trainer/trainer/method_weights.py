"""Checkpoint I/O of the method's own weights (aligners, projectors): beside the student, never inside it.

They are saved as ``_evl_aligner.safetensors`` (the leading underscore keeps them out of ``push_to_hub`` uploads),
split out of the state dict of the student they are registered under, and restored on resume.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from evl_kd_trainer.trainer.nonfinite import refuse_nonfinite_weights

ALIGNER_WEIGHTS_NAME = "_evl_aligner.safetensors"
KD_MODULE_NAME = "kd_method"


class MethodWeightsMixin:
    """Saving and restoring the method's weights; the trainer provides ``kd_method`` and ``_kd_active()``."""

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
