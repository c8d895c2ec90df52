"""A method's ``args`` without a whole training config: every ``EVLDistillConfig`` default, then overrides."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any


def method_args(**overrides: Any) -> SimpleNamespace:
    """The defaults of every ``EVLDistillConfig`` field (read from the dataclass: each default is written once, in
    its method's config) with ``overrides`` applied; for building a method in isolation, as the loss tests do."""
    from evl_kd_trainer.trainer.config import EVLDistillConfig

    values: dict[str, Any] = {}
    for field in dataclasses.fields(EVLDistillConfig):
        if field.default is not dataclasses.MISSING:
            values[field.name] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            values[field.name] = field.default_factory()
    unknown = sorted(set(overrides) - set(values))
    if unknown:
        raise TypeError(f"not EVLDistillConfig fields: {', '.join(unknown)}")
    values.update(overrides)
    return SimpleNamespace(**values)
