"""Give a set of parameters their own learning rate without re-implementing ``Trainer.create_optimizer``.

The paper trains its projectors/aligners at a higher rate than the rest ("projector LR", Tables 2-3). Rather than
building the optimizer ourselves (and losing what ``Trainer`` does there: ``optimizer_cls_and_kwargs``, GaLore /
APOLLO parameter selection, bitsandbytes embedding overrides, per-mesh groups), the parameters are hidden from
``Trainer.create_optimizer`` while it runs, taken out of any group it still put them in (GaLore's selection does
not look at ``requires_grad``), and added as groups of their own. Optimizers that cannot take extra groups (the
layer-wise GaLore / APOLLO variants, LOMO, any optimizer without ``add_param_group``) are refused with a clear
error.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from transformers import Trainer

from evl_kd_trainer.models.registry import family_projector_patterns, find_family


def projector_name_patterns(model: nn.Module) -> tuple[str, ...]:
    """Parameter-name fragments of ``model``'s own vision-language projector, as its model family names them
    (Qwen-VL's patch merger and Qwen3-VL's deepstack mergers, LLaVA's ``multi_modal_projector``, ...); ``()`` for
    a model no family covers."""
    family = find_family(model)
    return family.projector_patterns if family is not None else ()


def __getattr__(name: str) -> Any:
    # `PROJECTOR_NAME_PATTERNS`: the fragments of every registered family (computed on use, so that it includes
    # families registered after this import); `projector_name_patterns(model)` gives one model's.
    if name == "PROJECTOR_NAME_PATTERNS":
        return family_projector_patterns()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_NO_GROUPS = (
    "optim={optim!r} cannot give the aligner / projector parameters their own learning rate (layer-wise and LOMO "
    "optimizers take no extra parameter groups): choose another optimizer."
)


def create_optimizer_with_own_lr(
    trainer: Trainer, model: nn.Module | None, *groups: tuple[Iterable[nn.Parameter], float]
) -> torch.optim.Optimizer:
    """``Trainer.create_optimizer`` for every parameter but those of ``groups``; each ``(params, lr)`` pair gets
    groups of its own at ``lr`` (weight decay as ``Trainer`` decides it per parameter name). A parameter listed
    twice stays in the first pair. A no-op when the trainer already has an optimizer."""
    if trainer.optimizer is not None:
        return trainer.optimizer
    opt_model = trainer.model if model is None else model
    seen: set[int] = set()
    own: list[tuple[list[nn.Parameter], float]] = []
    for params, lr in groups:
        kept = [p for p in params if p.requires_grad and id(p) not in seen]
        seen.update(id(p) for p in kept)
        own.append((kept, lr))
    hidden = [p for params, _ in own for p in params]
    optim_name = str(getattr(trainer.args, "optim", "")).lower()
    if hidden and ("layerwise" in optim_name or "lomo" in optim_name):
        raise ValueError(_NO_GROUPS.format(optim=trainer.args.optim))
    for param in hidden:
        param.requires_grad_(False)
    try:
        optimizer = Trainer.create_optimizer(trainer, model)
    finally:
        for param in hidden:
            param.requires_grad_(True)
    if not hidden:
        return optimizer
    if not hasattr(optimizer, "add_param_group"):
        raise ValueError(_NO_GROUPS.format(optim=trainer.args.optim))
    hidden_ids = {id(p) for p in hidden}
    for group in optimizer.param_groups:
        group["params"] = [p for p in group["params"] if id(p) not in hidden_ids]
    optimizer.param_groups[:] = [g for g in optimizer.param_groups if g["params"]]
    decay = set(trainer.get_decay_parameter_names(opt_model))
    names = {id(p): name for name, p in opt_model.named_parameters()}
    for params, lr in own:
        for is_decay in (True, False):
            group = [p for p in params if (names.get(id(p)) in decay) == is_decay]
            if group:
                optimizer.add_param_group(
                    {"params": group, "lr": lr, "weight_decay": trainer.args.weight_decay if is_decay else 0.0}
                )
    return optimizer
