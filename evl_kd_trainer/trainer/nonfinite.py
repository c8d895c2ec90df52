"""Nothing non-finite reaches the weights, the logs lie about nothing, and no NaN weight is ever saved.

A diverging learning rate gives a NaN *gradient* behind a finite loss: checking the loss terms alone let that
update through, and the NaN weights were saved before the next step's loss raised. So every optimizer update is
also judged by its gradient norm (which ``Trainer`` computes anyway, for clipping or for the logs) just before
``optimizer.step()``, with one verdict shared by all ranks:

- ``nonfinite_kd_action="error"``: raise, naming the step and what was non-finite; no weight has changed.
- ``"skip"``: drop the whole update (every gradient set to ``None``: PyTorch optimizers then leave each parameter
  and its state untouched), count it, log the step's real loss (not 0.0) and keep it out of ``train_loss``; more
  than ``max_consecutive_skipped_steps`` skips in a row stop the run.

Under fp16 loss scaling a non-finite gradient is the scaler's business (it skips that update itself and lowers
the scale; this happens routinely early in a run), so only the loss terms are checked there. Under DeepSpeed the
engine steps its optimizer inside ``backward``: the gradient norm it reports is read after that step, so
``"error"`` stops the run at that very step, before anything is saved (DeepSpeed's own overflow check drops such an
update under fp32 / fp16 ZeRO; under bf16 without ``check_grad_overflow`` the in-memory weights may already be
NaN, which :func:`refuse_nonfinite_weights` then keeps off the disk).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from transformers.trainer_utils import TrainOutput
from transformers.utils import logging

logger = logging.get_logger(__name__)

_MAX_NAMED = 10


def nonfinite_tensor_names(tensors: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors holding a NaN or an infinity.

    ``amax`` / ``amin`` are reductions (no tensor-sized temporary, unlike ``isfinite(t).all()``) and propagate NaN;
    the flags of each device are fetched at once, so the check costs two reductions per tensor and one
    synchronisation per device.
    """
    flags: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor) or tensor.is_meta or tensor.numel() == 0:
            continue
        if not (tensor.is_floating_point() or tensor.is_complex()):
            continue
        value = tensor.detach()
        if value.is_complex():
            value = torch.view_as_real(value)
        try:
            finite = torch.isfinite(torch.stack([value.amax(), value.amin()])).all()
        except (RuntimeError, TypeError):  # dtypes without min/max kernels (float8): a plain pass
            finite = torch.isfinite(value.float()).all()
        flags.setdefault(finite.device, []).append((name, finite))
    bad = []
    for entries in flags.values():
        verdicts = torch.stack([flag for _, flag in entries]).cpu().tolist()
        bad += [name for (name, _), ok in zip(entries, verdicts) if not ok]
    return bad


def refuse_nonfinite_weights(tensors: Mapping[str, Any], where: str) -> None:
    """Raise ``FloatingPointError`` naming the tensors when any holds NaN or inf, before ``where`` is written."""
    bad = nonfinite_tensor_names(tensors)
    if bad:
        shown = ", ".join(bad[:_MAX_NAMED]) + (f", ... ({len(bad) - _MAX_NAMED} more)" if len(bad) > _MAX_NAMED else "")
        raise FloatingPointError(
            f"Refusing to save {where}: {len(bad)} tensor(s) hold NaN or inf values ({shown}). The weights diverged; "
            "nothing was written."
        )


def _describe(values: Mapping[str, torch.Tensor], bad: list[str]) -> str:
    return ", ".join(f"{name}={values[name].detach().float().mean().item()}" for name in bad)


class NonfiniteGuardMixin:
    """Trainer mixin (before ``Trainer`` in the bases) applying ``nonfinite_kd_action`` to every update.

    The subclass calls :meth:`_handle_nonfinite` with the loss terms of each micro-batch; the mixin checks the
    gradient norm in ``_get_grad_norm`` (called by ``Trainer`` right before ``optimizer.step()``), keeps skipped
    steps out of the accumulated training loss and corrects the logged ``loss`` / ``train_loss`` accordingly.
    """

    # Class-level defaults: evaluation may run before `train()` resets them.
    skipped_nonfinite_steps: int = 0  # updates dropped over the trainer's life
    _skip_update: bool = False  # a loss term of the current step was non-finite (the verdict of every rank)
    _nonfinite_found: str = ""  # what was non-finite in the current step, for the messages
    _consecutive_skips: int = 0
    _skipped_this_run: int = 0
    _step_open: bool = False
    _tr_loss_seen: torch.Tensor | None = None
    _tr_loss_before_step: torch.Tensor | None = None
    _step_loss: torch.Tensor | None = None
    _last_logged_step: int | None = None
    _window_skipped_losses: list[torch.Tensor] | None = None

    # ----------------------------------------------------------------------------------- loss terms (per batch)
    def _handle_nonfinite(self, ce_loss: torch.Tensor, terms: Mapping[str, torch.Tensor]) -> bool:
        """True when a term is non-finite (on any rank); raises under ``"error"``, else marks the update dropped.

        One all-gathered flag per micro-batch, so that every rank raises, or every rank skips the same update,
        instead of one rank leaving the others waiting in a collective. Under ``"error"`` this raises before the
        backward pass.
        """
        values = {"ce_loss": ce_loss, **terms}
        bad = [name for name, value in values.items() if not torch.isfinite(value.detach()).all()]
        flag = torch.tensor([float(bool(bad))], device=ce_loss.device)
        if self.accelerator.num_processes > 1:
            flag = self.accelerator.gather(flag)
        if not bool(flag.any()):
            return False
        step = self.state.global_step
        found = _describe(values, bad) or "on another rank"
        if self.args.nonfinite_kd_action == "error":
            raise FloatingPointError(
                f"Non-finite loss term at global step {step}: {found}. Set `nonfinite_kd_action='skip'` to skip "
                "such updates (they are counted)."
            )
        if not self.model.training:
            # Evaluation: nothing to skip; the non-finite total comes out in `eval_loss` as it is.
            logger.warning(f"Non-finite loss term in evaluation at global step {step}: {found}.")
            return False
        if not self._skip_update:
            self._skip_update = True
            self._nonfinite_found = f"loss term(s) {found}"
        return True

    # ------------------------------------------------------------------------------ micro-batches and updates
    def training_step(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        accumulated = getattr(self, "_tr_loss", None)
        # (a new `_tr_loss` means a new training loop, e.g. an `auto_find_batch_size` retry: a new update too)
        if not self._step_open or accumulated is not self._tr_loss_seen:
            # First micro-batch of an update: remember the accumulated loss, to take a dropped update out again.
            self._step_open = True
            self._tr_loss_seen = accumulated
            self._tr_loss_before_step = accumulated.detach().clone() if isinstance(accumulated, torch.Tensor) else None
            self._step_loss = None
            if self._last_logged_step is None:
                self._last_logged_step = self.state.global_step
        loss = super().training_step(*args, **kwargs)  # type: ignore[misc]
        # What Trainer adds to its running loss for this micro-batch, before its NaN filter replaces a NaN.
        self._step_loss = loss.detach() if self._step_loss is None else self._step_loss + loss.detach()
        return loss

    def _get_grad_norm(self, model: Any, grad_norm: Any = None) -> Any:
        grad_norm = super()._get_grad_norm(model, grad_norm=grad_norm)  # type: ignore[misc]
        self._judge_update(grad_norm)
        return grad_norm

    def _loss_is_scaled(self) -> bool:
        """fp16 loss scaling (torch AMP or DeepSpeed): non-finite gradients are then skipped by the scaler."""
        if self.args.fp16:
            return True
        fp16_enabled = getattr(self.model_wrapped, "fp16_enabled", None) if self.is_deepspeed_enabled else None
        return bool(fp16_enabled()) if callable(fp16_enabled) else False

    def _judge_update(self, grad_norm: Any) -> None:
        """The verdict on the update about to be applied: apply it, drop it, or stop the run."""
        self._step_open = False
        if hasattr(grad_norm, "full_tensor"):  # a DTensor norm (FSDP2): the same full value on every rank
            grad_norm = grad_norm.full_tensor()
        check_grad = grad_norm is not None and not self._loss_is_scaled()
        if isinstance(grad_norm, torch.Tensor):
            grad_bad = (~torch.isfinite(grad_norm.detach().float())).any().float().to(self.args.device).reshape(1)
        else:
            grad_bad = torch.tensor([0.0 if grad_norm is None or math.isfinite(grad_norm) else 1.0])
            grad_bad = grad_bad.to(self.args.device)
        flags = torch.cat([torch.tensor([float(self._skip_update)], device=self.args.device), grad_bad * check_grad])
        if self.accelerator.num_processes > 1:
            flags = self.accelerator.gather(flags).reshape(-1, 2).amax(dim=0)
        loss_bad, grad_bad_any = (bool(v) for v in flags.tolist())
        if not (loss_bad or grad_bad_any):
            self._consecutive_skips = 0
            return

        step = self.state.global_step
        found = [self._nonfinite_found] if loss_bad and self._nonfinite_found else []
        if grad_bad_any:
            local = float(grad_norm) if grad_norm is not None else float("nan")
            found.append(
                f"gradient norm={local}" if not math.isfinite(local) else "gradient norm non-finite on another rank"
            )
        what = "; ".join(found)
        if self.args.nonfinite_kd_action == "error":
            finite_loss = "" if loss_bad else " (the loss terms were finite)"
            where = (
                " DeepSpeed steps its optimizer inside backward: its own overflow check decided this update; nothing "
                "was saved."
                if self.is_deepspeed_enabled
                else " The update was not applied: every weight is unchanged."
            )
            raise FloatingPointError(
                f"Non-finite update at global step {step}: {what}{finite_loss}.{where} A diverging "
                "learning rate does this; set `nonfinite_kd_action='skip'` to drop such updates (they are counted)."
            )

        # "skip": no gradient, no update, no optimizer-state step; the schedule still advances.
        self.optimizer.zero_grad(set_to_none=True)
        self._skip_update = False
        self._nonfinite_found = ""
        self.skipped_nonfinite_steps += 1
        self._skipped_this_run += 1
        self._consecutive_skips += 1
        accumulated = getattr(self, "_tr_loss", None)
        if isinstance(accumulated, torch.Tensor) and self._tr_loss_before_step is not None:
            accumulated.copy_(self._tr_loss_before_step)  # the dropped step adds nothing to the running loss
        if self._window_skipped_losses is None:
            self._window_skipped_losses = []
        if self._step_loss is not None:
            self._window_skipped_losses.append(self._step_loss.reshape(1).float())
        logger.warning(
            f"Skipping the update of global step {step}: non-finite {what} ({self.skipped_nonfinite_steps} update(s) "
            "skipped so far)."
        )
        limit = self.args.max_consecutive_skipped_steps
        if self._consecutive_skips > limit:
            raise FloatingPointError(
                f"{self._consecutive_skips} consecutive updates (up to global step {step}) had non-finite values "
                f"(last: {what}), more than `max_consecutive_skipped_steps={limit}`: the run is diverging (lower the "
                "learning rate) or the data or teacher give NaN. No update was applied in those steps."
            )

    # ------------------------------------------------------------------------------------------------ logging
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            self._correct_window_loss(logs)
        if "train_loss" in logs and self._skipped_this_run:
            # `Trainer` divides the summed loss by every step of the run; the skipped ones added nothing to it.
            steps = self.state.global_step - getattr(self, "_initial_global_step", 0)
            kept = steps - self._skipped_this_run
            logs["train_loss"] = logs["train_loss"] * steps / kept if kept > 0 else float("nan")
        super().log(logs, start_time)  # type: ignore[misc]

    def _correct_window_loss(self, logs: dict[str, float]) -> None:
        skipped = self._window_skipped_losses or []
        last = self._last_logged_step if self._last_logged_step is not None else self.state.global_step
        steps = self.state.global_step - last
        if skipped and steps > 0:
            if steps > len(skipped):
                # the mean over the kept steps (the skipped ones added nothing to Trainer's sum)
                logs["loss"] = logs["loss"] * steps / (steps - len(skipped))
            else:
                # every step of the window was skipped: its real (non-finite) loss, averaged over ranks
                real = torch.cat(skipped)
                if self.accelerator.num_processes > 1:
                    real = self.accelerator.gather(real)
                logs["loss"] = real.mean().item()
        self._window_skipped_losses = []
        self._last_logged_step = self.state.global_step
        if self.skipped_nonfinite_steps:
            logs["skipped_nonfinite_steps"] = float(self.skipped_nonfinite_steps)

    def train(self, *args: Any, **kwargs: Any) -> TrainOutput:
        self._skip_update = False
        self._nonfinite_found = ""
        self._consecutive_skips = 0
        self._skipped_this_run = 0
        self._step_open = False
        self._last_logged_step = None
        self._window_skipped_losses = []
        output = super().train(*args, **kwargs)  # type: ignore[misc]
        if self._skipped_this_run and "train_loss" in output.metrics:
            output = TrainOutput(output.global_step, output.metrics["train_loss"], output.metrics)
        return output
