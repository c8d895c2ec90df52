"""Recipes: flat YAML files whose keys are config fields, plus command-line overrides.

``--recipe PATH`` loads the YAML; any field can then be given on the command line (``--learning_rate 1e-4``)
and wins over the recipe. Unknown keys, wrong types and missing files are errors that name the key or the
file, raised before any model loads (the command-line tools print them as one line, see ``cli_errors``).

``--help`` lists ``--recipe``, then this package's own fields (distillation, data), then the model's, then the
fields inherited from ``trl.SFTConfig`` / ``transformers.TrainingArguments``.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser

from evl_kd_trainer.scripts.cli_errors import DEBUG_FLAG, UserError

OWN_PACKAGE = "evl_kd_trainer"


class RecipeError(UserError, ValueError):
    """A recipe or override that cannot be used; the message names the file and the key."""


def _foreign_base(cls: type) -> type | None:
    """The first dataclass ``cls`` inherits from that is not this package's (``SFTConfig`` for our configs)."""
    for base in cls.__mro__[1:]:
        if dataclasses.is_dataclass(base) and not base.__module__.startswith(OWN_PACKAGE):
            return base
    return None


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the option help, the script's docstring (its launch command) kept as written."""


class RecipeArgumentParser(HfArgumentParser):
    """``HfArgumentParser`` that raises :class:`RecipeError` instead of printing the whole usage and exiting, with a
    short usage line and its options grouped: ours first, inherited last."""

    def __init__(self, dataclass_types: Sequence[type], prog: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        argparse.ArgumentParser.__init__(self, prog=prog, **kwargs)
        self.usage = f"{self.prog} [--recipe RECIPE] [--FIELD VALUE ...]"
        self.dataclass_types = list(dataclass_types)
        recipe = self.add_argument_group("recipe")
        recipe.add_argument("--recipe", type=str, default=None, help="YAML recipe whose keys are config fields.")
        recipe.add_argument(DEBUG_FLAG, action="store_true", help="Show tracebacks of configuration errors.")
        # The main config (ours, on top of TRL's) first, then our other argument classes, then foreign ones.
        own = [cls for cls in self.dataclass_types if cls.__module__.startswith(OWN_PACKAGE)]
        own.sort(key=lambda cls: _foreign_base(cls) is None)
        inherited: list[tuple[type, dataclasses.Field]] = []
        for cls in [*own, *(cls for cls in self.dataclass_types if cls not in own)]:
            base = _foreign_base(cls) if cls in own else None
            base_names = {f.name for f in dataclasses.fields(base)} if base is not None else set()
            hints = typing.get_type_hints(cls)
            group = self.add_argument_group(f"{cls.__name__} ({cls.__module__})")
            for field in dataclasses.fields(cls):
                if not field.init:
                    continue
                field.type = hints[field.name]
                if field.name in base_names:
                    inherited.append((base, field))
                else:
                    self._parse_dataclass_field(group, field)
        if inherited:
            base = inherited[0][0]
            group = self.add_argument_group(f"inherited from {base.__name__} ({base.__module__}) and its bases")
            for _, field in inherited:
                self._parse_dataclass_field(group, field)
        for action in self._actions:
            # HfArgumentParser gives `--no_X` the help of `--X` ("Show progress bars." for --no_progress).
            if isinstance(action, argparse._StoreFalseAction) and any(
                o.startswith("--no") for o in action.option_strings
            ):
                action.help = f"Turn off --{action.dest}."

    def error(self, message: str) -> typing.NoReturn:
        raise RecipeError(message)


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
    dataclass_types: Sequence[type],
    argv: Sequence[str] | None = None,
    description: str | None = None,
    prog: str | None = None,
    precheck: Callable[[argparse.Namespace], None] | None = None,
) -> tuple[Any, ...]:
    """Parse ``--recipe PATH`` plus command-line overrides into instances of ``dataclass_types``.

    Precedence: command line > recipe > dataclass defaults. ``precheck`` sees the merged raw values before any
    dataclass is built: path checks there speak before the configs' own checks (a missing checkpoint is reported
    before TrainingArguments' advice on bf16).
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--recipe", type=str, default=None)
    pre.add_argument(DEBUG_FLAG, action="store_true")
    known, rest = pre.parse_known_args(argv)
    parser = RecipeArgumentParser(tuple(dataclass_types), prog=prog, description=description)
    if known.recipe is not None:
        recipe = load_recipe(known.recipe)
        validate_recipe(recipe, dataclass_types, source=str(known.recipe))
        # Recipe values become parser defaults, so anything given on the command line wins.
        parser.set_defaults(**recipe)
    try:
        # Unknown flags are reported before any dataclass is built (a config's own checks would otherwise speak
        # first); `--help` exits here with status 0, as argparse does.
        namespace, unknown = parser.parse_known_args(list(rest))
        if unknown:
            raise RecipeError(f"unknown command-line argument(s): {' '.join(unknown)}")
        if precheck is not None:
            precheck(namespace)
        parsed = parser.parse_args_into_dataclasses(args=list(rest), return_remaining_strings=True)
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
