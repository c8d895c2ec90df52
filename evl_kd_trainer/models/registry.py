"""The model-family registry: built-in families are found by scanning :mod:`evl_kd_trainer.models.families`.

Every module of that package (one file per family) is imported on the first lookup; each registers its
:class:`~evl_kd_trainer.models.family.ModelFamily` with :func:`register_family`, so adding a family is adding a
file. Families defined elsewhere (a user's package) register the same way, before the lookup that needs them.

Lookups (by config, model, processor or model type) return ``None`` where no family matches, so that central modules
fall back to generic behaviour; :func:`get_adapter` raises instead, listing the supported model types.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from transformers import PretrainedConfig

from evl_kd_trainer.models.base import ADAPTER_REGISTRY, ModelAdapter, unwrap_model
from evl_kd_trainer.models.family import ModelFamily

FAMILIES_PACKAGE = "evl_kd_trainer.models.families"

F = TypeVar("F", bound=type[ModelFamily])

_FAMILIES: dict[str, ModelFamily] = {}
_scanned = False


def register_family(cls: F) -> F:
    """Class decorator registering a :class:`ModelFamily` subclass (one instance) under ``cls.name``.

    Raises:
        ValueError: for an empty or taken name, or a chat template name another family registers differently
            (replacing either would silently change what a recipe trains).
    """
    name = cls.name.strip().lower()
    if not name:
        raise ValueError(f"{cls.__qualname__} needs a `name`.")
    if name in _FAMILIES:
        if type(_FAMILIES[name]) is cls:
            return cls
        raise ValueError(f"A model family named {name!r} is already registered ({type(_FAMILIES[name]).__qualname__}).")
    for other in _FAMILIES.values():
        for template, text in cls.chat_templates.items():
            if other.chat_templates.get(template, text) != text:
                raise ValueError(f"Chat template {template!r} of family {name!r} differs from family {other.name!r}'s.")
    _FAMILIES[name] = cls()
    return cls


def load_builtin_families() -> None:
    """Import every module of :mod:`evl_kd_trainer.models.families` (once), so that each registers its family."""
    global _scanned
    if _scanned:
        return
    package = importlib.import_module(FAMILIES_PACKAGE)
    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{FAMILIES_PACKAGE}.{module.name}")
    _scanned = True


def families() -> list[ModelFamily]:
    """Every registered family, by name."""
    load_builtin_families()
    return [_FAMILIES[name] for name in sorted(_FAMILIES)]


def get_family(name: str) -> ModelFamily:
    """The family registered as ``name``; unknown names raise a ``ValueError`` listing the known ones."""
    load_builtin_families()
    key = str(name).strip().lower()
    if key not in _FAMILIES:
        raise ValueError(f"Unknown model family {name!r}. Known model families: {', '.join(sorted(_FAMILIES))}.")
    return _FAMILIES[key]


def _best(candidates: Iterable[ModelFamily], what: str) -> ModelFamily | None:
    ranked = sorted(candidates, key=lambda family: -family.priority)
    if len(ranked) > 1 and ranked[0].priority == ranked[1].priority:
        raise ValueError(
            f"Model families {ranked[0].name!r} and {ranked[1].name!r} both claim {what} at the same priority."
        )
    return ranked[0] if ranked else None


def config_of(model_or_config: Any) -> PretrainedConfig:
    """The config of a (possibly PEFT / DDP / DeepSpeed-wrapped) model, or the config itself."""
    if isinstance(model_or_config, PretrainedConfig):
        return model_or_config
    return unwrap_model(model_or_config).config


def find_family(model_or_config: Any) -> ModelFamily | None:
    """The family of a model (possibly wrapped) or config, or ``None``."""
    config = config_of(model_or_config)
    matches = [family for family in families() if family.matches_config(config)]
    return _best(matches, f"model_type {getattr(config, 'model_type', None)!r}")


def find_family_for_processor(processor: Any) -> ModelFamily | None:
    """The family whose processor classes ``processor`` is an instance of, or ``None``."""
    if processor is None:
        return None
    matches = [family for family in families() if family.matches_processor(processor)]
    return _best(matches, f"processor {type(processor).__name__}")


def find_family_for_model_type(model_type: str) -> ModelFamily | None:
    """The family prompting ``model_type`` (a family's model type or one of its ``template_model_types``).

    Without a config, a family that only refines another for some configs (higher priority, same model type) is not
    consulted: the general family is, and a refining family keeps its templates.
    """
    matches = [f for f in families() if model_type in f.model_types or model_type in f.template_model_types]
    if not matches:
        return None
    lowest = min(family.priority for family in matches)
    return _best([family for family in matches if family.priority == lowest], f"model_type {model_type!r}")


def chat_templates() -> dict[str, str]:
    """Every family's registered chat templates, ``name -> Jinja``."""
    merged: dict[str, str] = {}
    for family in families():
        merged.update(family.chat_templates)
    return merged


def family_projector_patterns(families_: Iterable[ModelFamily] | None = None) -> tuple[str, ...]:
    """The projector parameter-name fragments of ``families_`` (default: every registered family), in order."""
    patterns: dict[str, None] = {}
    for family in families() if families_ is None else families_:
        patterns.update(dict.fromkeys(family.projector_patterns))
    return tuple(patterns)


# --- adapters -----------------------------------------------------------------------------------------------
def supported_model_types() -> list[str]:
    """The ``config.model_type`` values that have an adapter (every family's, and any registered directly with
    :func:`~evl_kd_trainer.models.base.register_adapter`)."""
    types = {model_type for family in families() for model_type in family.model_types}
    return sorted(types | set(ADAPTER_REGISTRY.names()))


def get_adapter(model_or_config: Any) -> ModelAdapter:
    """The :class:`~evl_kd_trainer.models.base.ModelAdapter` for a model (possibly wrapped by PEFT / DDP /
    DeepSpeed) or a config: its family's, else one registered with ``register_adapter``.

    Raises:
        ValueError: for an unsupported ``model_type``, listing the supported ones.
    """
    config = config_of(model_or_config)
    family = find_family(config)
    if family is not None:
        return family.adapter(config)
    model_type = getattr(config, "model_type", None)
    if model_type in ADAPTER_REGISTRY:
        return ADAPTER_REGISTRY.get(model_type)(config)
    raise ValueError(
        f"No model adapter for model_type {model_type!r}. Supported model types: {', '.join(supported_model_types())}."
    )


class ChatTemplates(Mapping[str, str]):
    """A live, read-only ``name -> Jinja`` view of every family's registered chat templates (a family registered
    later shows up too)."""

    def __getitem__(self, name: str) -> str:
        return chat_templates()[name]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(chat_templates())

    def __len__(self) -> int:
        return len(chat_templates())

    def __repr__(self) -> str:
        return f"ChatTemplates({sorted(chat_templates())})"


__all__ = [
    "ChatTemplates",
    "FAMILIES_PACKAGE",
    "chat_templates",
    "config_of",
    "families",
    "family_projector_patterns",
    "find_family",
    "find_family_for_model_type",
    "find_family_for_processor",
    "get_adapter",
    "get_family",
    "load_builtin_families",
    "register_family",
    "supported_model_types",
]
