"""Name -> loss registry, in the manner of torchdistill's loss registry.

Each loss family lives in its own module and registers its public callables here by name, so that
recipes and the trainer select losses (and whole distillation methods) with a string, and the
baseline methods plug in beside EVL-ECG without touching the trainer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T", bound=Callable[..., Any])

LOSS_REGISTRY: dict[str, Callable[..., Any]] = {}


def register_loss(name: str) -> Callable[[T], T]:
    """Decorator registering a loss function (or loss module class) under ``name``.

    Registering the same name twice is an error: silently replacing a loss would change what a
    recipe trains without any trace.
    """

    key = name.strip().lower()

    def decorator(obj: T) -> T:
        if key in LOSS_REGISTRY and LOSS_REGISTRY[key] is not obj:
            raise ValueError(f"A loss named {key!r} is already registered ({LOSS_REGISTRY[key]!r}).")
        LOSS_REGISTRY[key] = obj
        return obj

    return decorator


def get_loss(name: str) -> Callable[..., Any]:
    """Return the loss registered under ``name``; unknown names raise a ``ValueError`` listing the known ones."""
    key = name.strip().lower()
    if key not in LOSS_REGISTRY:
        raise ValueError(f"Unknown loss {name!r}. Known losses: {', '.join(list_losses()) or '(none)'}.")
    return LOSS_REGISTRY[key]


def list_losses() -> list[str]:
    """Sorted names of every registered loss."""
    return sorted(LOSS_REGISTRY)
