"""The method registry: ``kd_method`` names -> method classes, and the discovery of the built-in methods.

A built-in method is a sub-package of :mod:`evl_kd_trainer.methods` holding a ``config`` module (its config
dataclass, light to import) and a ``method`` module (its :class:`~evl_kd_trainer.methods.base.DistillationMethod`,
registered with :func:`register_method`). Both are found by scanning the package, not from a hand-written list:
adding a folder adds a method, its config fields join ``EVLDistillConfig`` and the recipe parser.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from evl_kd_trainer.registry import Registry, T

METHOD_REGISTRY = Registry("KD method")
_PACKAGE = "evl_kd_trainer.methods"
_PACKAGE_DIR = Path(__file__).resolve().parent


def register_method(name: str) -> Callable[[T], T]:
    """Class decorator registering a method class under ``name`` (the ``kd_method`` value)."""
    return METHOD_REGISTRY.register(name)


@cache
def builtin_method_names() -> tuple[str, ...]:
    """The built-in methods: every sub-package of ``evl_kd_trainer.methods`` (EVL-ECG first, then by name, so that
    ``--help``, the config's docs and the benchmark tables list them in a stable order)."""
    names = (info.name for info in pkgutil.iter_modules([str(_PACKAGE_DIR)]) if info.ispkg)
    return tuple(sorted(names, key=lambda name: (name != "evl", name)))


@cache
def method_config_classes() -> tuple[type, ...]:
    """Each built-in method's config dataclass (``<package>.config.CONFIG``), in :func:`builtin_method_names`
    order: the mixins ``EVLDistillConfig`` is made of."""
    classes = []
    for name in builtin_method_names():
        module = importlib.import_module(f"{_PACKAGE}.{name}.config")
        config = module.CONFIG
        if not dataclasses.is_dataclass(config):
            raise TypeError(f"{module.__name__}.CONFIG must be a dataclass, got {config!r}")
        classes.append(config)
    return tuple(classes)


def load_builtin_methods() -> None:
    """Import every built-in method's ``method`` module, so that each registers itself."""
    for name in builtin_method_names():
        importlib.import_module(f"{_PACKAGE}.{name}.method")


def get_method(name: str) -> Any:
    """The method class registered as ``name``; unknown names raise a ``ValueError`` listing the known ones."""
    load_builtin_methods()
    return METHOD_REGISTRY.get(name)


def method_names() -> list[str]:
    """Every registered method name (built-in ones included), sorted."""
    load_builtin_methods()
    return METHOD_REGISTRY.names()
