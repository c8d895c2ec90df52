"""Name -> loss function registry (one module per loss family registers its functions here)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from evl_kd_trainer.registry import Registry, T

LOSS_REGISTRY = Registry("loss")


def register_loss(name: str) -> Callable[[T], T]:
    """Decorator registering a loss function under ``name``; a second object under the same name is an error."""
    return LOSS_REGISTRY.register(name)


def get_loss(name: str) -> Callable[..., Any]:
    """Return the loss registered under ``name``; unknown names raise a ``ValueError`` listing the known ones."""
    return LOSS_REGISTRY.get(name)


def list_losses() -> list[str]:
    """Sorted names of every registered loss."""
    return LOSS_REGISTRY.names()
