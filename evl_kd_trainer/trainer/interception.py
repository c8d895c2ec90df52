"""Running the distillation method inside the student's own forward, and handing its terms back.

The method's modules (aligners, projectors) are registered under the student; the student's ``forward`` is
redirected for the duration of one ``compute_loss`` so that DDP and DeepSpeed see one forward that uses every
trainable parameter (the aligners' gradients are synchronised, ZeRO-3 gathers their weights). The terms come back
through the object the context manager yields, not through trainer state.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from evl_kd_trainer.methods import DistillationMethod, DistillFeatures, FeatureRequest
from evl_kd_trainer.models.base import ModelAdapter


@dataclass
class InterceptedTerms:
    """What one intercepted forward produced: the method's terms (``None`` until the student's forward ran)."""

    terms: dict[str, torch.Tensor] | None = None


@contextlib.contextmanager
def intercept_student_forward(
    student: nn.Module,
    adapter: ModelAdapter,
    method: DistillationMethod,
    request: FeatureRequest,
    make_features: Callable[[Any], DistillFeatures],
) -> Iterator[InterceptedTerms]:
    """Within the block, ``student``'s forward captures its features (hooks), then runs ``method`` on
    ``make_features(store)``; the yielded object's ``terms`` holds the result."""
    from evl_kd_trainer.models.capture import capture_features

    result = InterceptedTerms()
    had_instance_forward = "forward" in student.__dict__
    inner_forward = student.forward

    def forward_with_distillation(*args: Any, **kwargs: Any) -> Any:
        if result.terms is not None:
            # SFTTrainer runs a second, no-grad forward for its metrics when the loss needs full logits
            # (`compute_loss_func`, label smoothing) or outputs are asked for: the terms of the first forward,
            # the one with gradients, stand; the extra forward is the student's own.
            return inner_forward(*args, **kwargs)
        with capture_features(student, adapter, hidden_layer=request.student_layer, visual=request.visual) as store:
            outputs = inner_forward(*args, **kwargs)
        result.terms = method(make_features(store))
        if isinstance(outputs, dict) and torch.is_grad_enabled():
            # DDP with find_unused_parameters searches the forward's *outputs* for the parameters in use; the terms
            # are not among them, so the aligners would be declared unused and their gradients would then arrive in
            # backward ("marked ready twice"). An exact, NaN-proof zero built from empty slices of the method's
            # parameters connects them to the output through `loss`: TRL's CE reads the per-token log-probs, and
            # when the forward computed no loss (label smoothing, `compute_loss_func`: they read the logits) the
            # field holds that zero. (DDP rebuilds the output class from its fields, so no new field can carry it.)
            anchor = sum(p.reshape(-1)[:0].sum() for p in method.parameters())
            loss = outputs.get("loss")
            outputs["loss"] = anchor if loss is None else loss + anchor
        return outputs

    student.forward = forward_with_distillation
    try:
        yield result
    finally:
        if had_instance_forward:
            student.forward = inner_forward
        else:
            del student.forward
