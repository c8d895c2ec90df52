"""Checkpoints that are complete or absent, and a resume that never silently starts from fresh state.

- A checkpoint is written into ``_tmp-checkpoint-N/checkpoint-N`` and renamed to ``checkpoint-N`` once every rank
  has written its part: a process killed during a save leaves only the ``_tmp-`` folder, which neither
  ``resume_from_checkpoint=True`` nor checkpoint rotation nor a Hub push (``_*`` is never uploaded) looks at, and
  which the next save or ``train()`` removes. The Hub push of a checkpoint (``hub_strategy``) and the rotation of
  old ones run after the rename, on the folder in its final place.
- ``resume_from_checkpoint=True`` (also the string ``"True"`` of the example scripts' command line) takes the
  newest *complete* ``checkpoint-N`` of ``output_dir``, naming the newer ones it passed over and why.
- A checkpoint without its optimizer, scheduler or aligner file is an error naming the file (``Trainer`` would
  otherwise continue with a fresh optimizer without a word), unless ``allow_partial_resume=True``: then the run
  continues with fresh state for what is missing, with a warning.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from collections.abc import Sequence
from typing import Any

from transformers.trainer import OPTIMIZER_NAME, OPTIMIZER_NAME_BIN, SCHEDULER_NAME, TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput, rotate_checkpoints
from transformers.utils import logging

logger = logging.get_logger(__name__)

STAGING_PREFIX = "_tmp-"  # the leading underscore also keeps it out of Trainer's Hub uploads (`ignore_patterns`)
_CHECKPOINT_RE = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
)
_FRESH_STATE = {
    OPTIMIZER_NAME: "a fresh optimizer (moments reset)",
    SCHEDULER_NAME: "a learning-rate schedule restarted from its first step",
}


def parse_resume_argument(value: str | bool | None) -> str | bool | None:
    """``True`` for ``True`` / ``"true"`` (what ``--resume_from_checkpoint True`` gives), ``None`` for no resume."""
    if value is None or value is False:
        return None
    if value is True:
        return True
    text = str(value).strip()
    if text.lower() in ("", "false", "none", "no") and not os.path.isdir(text):
        return None
    if text.lower() in ("true", "yes") and not os.path.isdir(text):
        return True
    return text


def _has_weights(folder: str, names: list[str]) -> bool:
    if any(name in names for name in WEIGHT_FILES):
        return True
    # FSDP's sharded model (`pytorch_model_fsdp*`) or a DeepSpeed checkpoint (`global_step*/`)
    return any(name.startswith(("pytorch_model_fsdp", "global_step")) for name in names)


def _has_optimizer(folder: str, names: list[str]) -> bool:
    # `Trainer._load_optimizer_and_scheduler`'s own test: a file, or FSDP's sharded `optimizer_*` folder
    if OPTIMIZER_NAME in names or OPTIMIZER_NAME_BIN in names:
        return True
    return any("optimizer" in name and os.path.isdir(os.path.join(folder, name)) for name in names)


def missing_checkpoint_files(folder: str, deepspeed: bool = False, extra: Sequence[str] = ()) -> tuple[list, list]:
    """``(fatal, partial)``: what ``folder`` lacks to be resumed at all, and what a resume would start afresh."""
    names = os.listdir(folder) if os.path.isdir(folder) else []
    fatal = []
    if TRAINER_STATE_NAME not in names:
        fatal.append(TRAINER_STATE_NAME)
    if not _has_weights(folder, names):
        fatal.append("model weights (" + " / ".join(WEIGHT_FILES[:2]) + ")")
    partial = []
    if deepspeed:
        # the engine's checkpoint holds the module, the optimizer and its scheduler
        if not any(name.startswith("global_step") for name in names):
            fatal.append("global_step*/ (the DeepSpeed checkpoint)")
    else:
        if not _has_optimizer(folder, names):
            partial.append(OPTIMIZER_NAME)
        if SCHEDULER_NAME not in names:
            partial.append(SCHEDULER_NAME)
    partial += [name for name in extra if name not in names]
    return fatal, partial


def checkpoint_folders(output_dir: str) -> list[str]:
    """The ``checkpoint-N`` folders of ``output_dir``, newest (largest N) first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = _CHECKPOINT_RE.match(name)
        if match and os.path.isdir(os.path.join(output_dir, name)):
            found.append((int(match.group(1)), os.path.join(output_dir, name)))
    return [path for _, path in sorted(found, reverse=True)]


def newest_complete_checkpoint(
    output_dir: str, deepspeed: bool = False, extra: Sequence[str] = (), allow_partial: bool = False
) -> str:
    """The newest complete checkpoint of ``output_dir`` (with ``allow_partial``: the newest resumable one when none
    is complete); raises ``FileNotFoundError`` listing each incomplete one and what it lacks."""
    passed_over = []
    resumable = None
    for folder in checkpoint_folders(output_dir):
        fatal, partial = missing_checkpoint_files(folder, deepspeed, extra)
        if not fatal and not partial:
            if passed_over:
                logger.warning(
                    f"Resuming from {folder}, the newest complete checkpoint; passed over: "
                    + "; ".join(f"{path} (missing {', '.join(lacks)})" for path, lacks in passed_over)
                    + "."
                )
            return folder
        if not fatal and resumable is None:
            resumable = folder
        passed_over.append((folder, fatal + partial))
    if allow_partial and resumable is not None:
        return resumable
    if not passed_over:
        raise FileNotFoundError(f"resume_from_checkpoint=True: no checkpoint-N folder in {output_dir}.")
    listed = "; ".join(f"{path} lacks {', '.join(lacks)}" for path, lacks in passed_over)
    hint = " Set `allow_partial_resume=True` to continue with fresh state." if resumable is not None else ""
    raise FileNotFoundError(f"resume_from_checkpoint=True: no complete checkpoint in {output_dir}: {listed}.{hint}")


def check_resume_checkpoint(
    folder: str, deepspeed: bool = False, extra: Sequence[str] = (), allow_partial: bool = False
) -> list[str]:
    """Raise naming the missing files unless ``folder`` can be resumed as asked; returns the partial ones."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"resume_from_checkpoint: no such checkpoint folder: {folder}")
    fatal, partial = missing_checkpoint_files(folder, deepspeed, extra)
    if fatal:
        raise FileNotFoundError(f"Checkpoint {folder} cannot be resumed: it has no {', '.join(fatal)}.")
    if partial and not allow_partial:
        raise FileNotFoundError(
            f"Checkpoint {folder} has no {', '.join(partial)}: resuming would continue with fresh state for it. "
            "Set `allow_partial_resume=True` to do so anyway."
        )
    return partial


def _move_into_place(staged: str, final: str) -> None:
    if os.path.isdir(final):
        # Same step saved again (a resumed run that diverged, or two saves at one step): replace it whole.
        old = os.path.join(os.path.dirname(final), f"{STAGING_PREFIX}old-{os.path.basename(final)}")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
        os.rename(staged, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(staged, final)


@dataclasses.dataclass
class _Staging:
    run_dir: str
    push_requested: bool = False


class AtomicCheckpointMixin:
    """Trainer mixin (before ``Trainer`` in the bases): checkpoints renamed into place, strict resume.

    Subclasses name the files of their own a checkpoint must hold in :meth:`_resume_extra_files`.
    """

    _staging: _Staging | None = None

    def _resume_extra_files(self) -> list[str]:
        return []

    # ----------------------------------------------------------------------------------------------- saving
    def _get_output_dir(self, trial: Any) -> str:
        if self._staging is not None:
            return self._staging.run_dir
        return super()._get_output_dir(trial)  # type: ignore[misc]

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        if self._staging is not None:
            self._staging.push_requested = True  # pushed from its final place, once renamed
            return
        super()._push_from_checkpoint(checkpoint_folder)  # type: ignore[misc]

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        run_dir = self._get_output_dir(trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging_dir = os.path.join(run_dir, STAGING_PREFIX + name)
        staged, final = os.path.join(staging_dir, name), os.path.join(run_dir, name)
        writer = self.args.should_save
        if writer:
            shutil.rmtree(staging_dir, ignore_errors=True)  # left by a save that was killed
        self.accelerator.wait_for_everyone()  # no rank writes its part before the stale folder is gone
        staging = self._staging = _Staging(staging_dir)
        try:
            super()._save_checkpoint(model, trial)  # type: ignore[misc]
        except BaseException:
            if writer:
                shutil.rmtree(staging_dir, ignore_errors=True)
            raise
        finally:
            self._staging = None
        if self.state.best_model_checkpoint is not None and os.path.normpath(
            self.state.best_model_checkpoint
        ) == os.path.normpath(staged):
            self.state.best_model_checkpoint = final
            if writer:
                self.state.save_to_json(os.path.join(staged, TRAINER_STATE_NAME))
        self.accelerator.wait_for_everyone()  # every rank's files (RNG states, DeepSpeed shards) are written
        if writer:
            try:
                _move_into_place(staged, final)
            except FileNotFoundError:
                if not os.path.isdir(final):  # another writer of a shared filesystem (save_on_each_node) was first
                    raise
            shutil.rmtree(staging_dir, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        if staging.push_requested:
            self._push_from_checkpoint(final)
        if writer:
            rotate_checkpoints(
                output_dir=run_dir,
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=True,
            )

    # ---------------------------------------------------------------------------------------------- resume
    def train(
        self,
        resume_from_checkpoint: str | bool | None = None,
        trial: Any = None,
        ignore_keys_for_eval: list[str] | None = None,
        **kwargs: Any,
    ) -> TrainOutput:
        resume = parse_resume_argument(resume_from_checkpoint)
        deepspeed = bool(self.is_deepspeed_enabled)
        extra = self._resume_extra_files()
        allow_partial = bool(getattr(self.args, "allow_partial_resume", False))
        if resume is True:
            resume = newest_complete_checkpoint(self.args.output_dir, deepspeed, extra, allow_partial)
        if resume is not None:
            partial = check_resume_checkpoint(resume, deepspeed, extra, allow_partial)
            if partial:
                fresh = [_FRESH_STATE.get(name, f"fresh state for {name}") for name in partial]
                together = (
                    f" (Trainer restores {OPTIMIZER_NAME} and {SCHEDULER_NAME} only together: both start fresh)"
                    if any(name in (OPTIMIZER_NAME, SCHEDULER_NAME) for name in partial)
                    else ""
                )
                logger.warning(
                    f"Checkpoint {resume} has no {', '.join(partial)}: continuing with {', '.join(fresh)}{together} "
                    "(allow_partial_resume=True)."
                )
        self._remove_stale_staging()
        return super().train(  # type: ignore[misc]
            resume_from_checkpoint=resume, trial=trial, ignore_keys_for_eval=ignore_keys_for_eval, **kwargs
        )

    def _remove_stale_staging(self) -> None:
        """Drop the ``_tmp-checkpoint-*`` folders of killed saves (never complete, by construction)."""
        output_dir = self.args.output_dir
        if not self.args.should_save or not os.path.isdir(output_dir):
            return
        for name in os.listdir(output_dir):
            if name.startswith(STAGING_PREFIX + PREFIX_CHECKPOINT_DIR) or name.startswith(f"{STAGING_PREFIX}old-"):
                logger.info(f"Removing {os.path.join(output_dir, name)}, left by an interrupted checkpoint save.")
                shutil.rmtree(os.path.join(output_dir, name), ignore_errors=True)
