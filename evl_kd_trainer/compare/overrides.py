"""Command-line overrides of a comparison: ``KEY=VALUE`` or ``--KEY VALUE ...`` tokens, as distill argv tokens.

Both forms are accepted for the settings passed to every run (``max_steps=20`` or ``--max_steps 20``); a list
field written ``KEY=VALUE`` takes comma-separated values (``report_to=none`` / ``data_files=a.json,b.json``).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Sequence
from typing import Any

from evl_kd_trainer.compare.methods import unknown_key_message
from evl_kd_trainer.errors import UserError

_PAIR = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.DOTALL)


def field_types(dataclass_types: Sequence[type]) -> dict[str, Any]:
    """``{field name: type hint}`` of the init fields of ``dataclass_types`` (first one wins)."""
    types: dict[str, Any] = {}
    for cls in dataclass_types:
        hints = typing.get_type_hints(cls)
        for item in dataclasses.fields(cls):
            if item.init:
                types.setdefault(item.name, hints.get(item.name, Any))
    return types


def _is_list(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (list, tuple, Sequence):
        return True
    if origin in (typing.Union, types.UnionType):  # `list[str] | None`
        return any(_is_list(arg) for arg in typing.get_args(tp))
    return False


def split_overrides(
    tokens: Sequence[str], fields: dict[str, Any], where: str, reserved: dict[str, str]
) -> list[tuple[str, list[str]]]:
    """Parse ``tokens`` into ``(key, values)`` pairs; every key must be in ``fields`` and not in ``reserved``
    (``{key: why}``). Raises :class:`UserError` naming the token or key."""
    pairs: list[tuple[str, list[str]]] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if token.startswith("--"):
            key, eq, value = token[2:].partition("=")
            if eq:
                values = [value]
            else:  # `--key v1 v2`: the values up to the next option or KEY=VALUE pair
                values = []
                while index < len(tokens) and not tokens[index].startswith("--") and not _PAIR.match(tokens[index]):
                    values.append(tokens[index])
                    index += 1
        elif match := _PAIR.match(token):
            key, value = match.group(1), match.group(2)
            values = value.split(",") if _is_list(fields.get(key)) else [value]
        else:
            raise UserError(f"unexpected argument {token!r}: overrides are KEY=VALUE or --KEY VALUE")
        if key in reserved:
            raise UserError(f"override {key!r}: {reserved[key]}")
        if key not in fields:
            raise UserError(f"override {unknown_key_message(key, fields, where)}")
        pairs.append((key, values))
    return pairs


def to_argv(pairs: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    return [token for key, values in pairs for token in (f"--{key}", *values)]
