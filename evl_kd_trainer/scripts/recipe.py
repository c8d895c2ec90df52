"""Recipes: flat YAML files whose keys are config fields, plus command-line overrides.

``--recipe PATH`` loads the YAML; any field can then be given on the command line (``--learning_rate 1e-4``)
and wins over the recipe. Unknown keys, wrong types and missing files are errors that name the key or the
file, raised before any model loads.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser


class RecipeError(ValueError):
    """A recipe or override that cannot be used; the message names the file and the key."""


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read a flat YAML recipe; nested mappings are allowed only as values of dict-typed fields."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"Recipe file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a flat mapping of config fields, got {type(data).__name__}.")
    return data


def _fields(dataclass_types: Sequence[type]) -> dict[str, tuple[type, dataclasses.Field]]:
    fields: dict[str, tuple[type, dataclasses.Field]] = {}
    for cls in dataclass_types:
        for field in dataclasses.fields(cls):
            if field.init:
                fields.setdefault(field.name, (cls, field))
    return fields


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _matches(value: Any, tp: Any) -> bool:
    """Whether a YAML value fits a dataclass field type (int is accepted for float, str for enums)."""
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(tp))
    if origin is typing.Literal:
        return value in typing.get_args(tp)
    if tp is type(None):
        return value is None
    if origin in (list, tuple, Sequence):
        return isinstance(value, (list, tuple))
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    if isinstance(tp, type) and issubclass(tp, Enum):
        return value in {m.value for m in tp} or isinstance(value, tp)
    if tp is bool:
        return isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def validate_recipe(recipe: dict[str, Any], dataclass_types: Sequence[type], source: str) -> None:
    """Raise :class:`RecipeError` naming ``source`` and the key for unknown keys and mistyped values."""
    fields = _fields(dataclass_types)
    unknown = sorted(set(recipe) - set(fields))
    if unknown:
        raise RecipeError(
            f"{source}: unknown key(s) {', '.join(repr(k) for k in unknown)}; a recipe's keys are fields of "
            f"{', '.join(cls.__name__ for cls in dataclass_types)}."
        )
    for key, value in recipe.items():
        cls, field = fields[key]
        hints = typing.get_type_hints(cls)
        expected = hints.get(field.name, Any)
        if not _matches(value, expected):
            raise RecipeError(
                f"{source}: key {key!r} expects {_type_name(expected)}, got {type(value).__name__} {value!r}."
            )


def parse_recipe_args(
    dataclass_types: Sequence[type], argv: Sequence[str] | None = None, description: str | None = None
) -> tuple[Any, ...]:
    """Parse ``--recipe PATH`` plus command-line overrides into instances of ``dataclass_types``.

    Precedence: command line > recipe > dataclass defaults.
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--recipe", type=str, default=None)
    known, rest = pre.parse_known_args(argv)
    parser = HfArgumentParser(tuple(dataclass_types), description=description)
    parser.add_argument("--recipe", type=str, default=None, help="YAML recipe whose keys are config fields.")
    if known.recipe is not None:
        recipe = load_recipe(known.recipe)
        validate_recipe(recipe, dataclass_types, source=str(known.recipe))
        # Recipe values become parser defaults, so anything given on the command line wins.
        parser.set_defaults(**recipe)
    try:
        # Unknown flags are reported before any dataclass is built (a config's own checks would otherwise speak
        # first); `--help` exits here with status 0, as argparse does.
        _, unknown = parser.parse_known_args(list(rest))
        if unknown:
            raise RecipeError(f"unknown command-line argument(s): {' '.join(unknown)}")
        parsed = parser.parse_args_into_dataclasses(args=list(rest), return_remaining_strings=True)
    except SystemExit as err:
        if not err.code:
            raise
        # argparse already printed what was wrong
        raise RecipeError(f"invalid command-line arguments: {' '.join(rest)}") from err
    except RecipeError:
        raise
    except ValueError as err:
        # A config's own check (`__post_init__`: a range, or TrainingArguments' hardware checks such as bf16 on a
        # machine without a bf16 GPU): say which recipe the values came from.
        if known.recipe is None:
            where = "command line"
        else:
            where = f"{known.recipe} (with command-line overrides)" if rest else str(known.recipe)
        raise RecipeError(f"{where}: {err}") from err
    *outputs, remaining = parsed
    # HfArgumentParser appends a Namespace for the non-dataclass `--recipe` option: keep only the dataclasses.
    instances = [out for out in outputs if dataclasses.is_dataclass(out)]
    if remaining:
        raise RecipeError(f"unknown command-line argument(s): {' '.join(remaining)}")
    return tuple(instances)
