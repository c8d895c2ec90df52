"""The methods of a comparison: ``NAME`` or ``NAME=KD_METHOD[,KEY=VALUE...]`` specs, checked before any training.

``sft`` is the method ``kd_method=sft`` (cross-entropy only: the control); ``ot_only=evl,lambda_mhca=0,lambda_rel=0``
is EVL-ECG with two terms off, under the name ``ot_only``. The name names the run folders and the table rows.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from evl_kd_trainer.errors import UserError

SPEC_SYNTAX = "NAME or NAME=KD_METHOD[,KEY=VALUE...]"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Set by the comparison itself for every run: a method may not change them.
RESERVED_KEYS = frozenset({"kd_method", "seed", "output_dir", "recipe"})


@dataclass(frozen=True)
class MethodSpec:
    """One compared method: its name, the registered ``kd_method`` it trains with, and its config overrides."""

    name: str
    kd_method: str
    overrides: tuple[tuple[str, str], ...] = ()

    @property
    def description(self) -> str:
        """``kd_method`` and overrides as written (``evl, lambda_rel=0``)."""
        return ", ".join([self.kd_method, *(f"{key}={value}" for key, value in self.overrides)])

    def argv(self) -> list[str]:
        """The method's part of a distill command line (its overrides; ``kd_method`` is added per run)."""
        return [token for key, value in self.overrides for token in (f"--{key}", value)]


def parse_method_spec(text: str) -> MethodSpec:
    """Split one spec; raises :class:`UserError` naming it when the syntax is wrong."""
    name, sep, rest = text.partition("=")
    if not _NAME.match(name):
        raise UserError(f"method {text!r}: the name must be letters, digits, '_', '.', '+' or '-' ({SPEC_SYNTAX})")
    if not sep:
        return MethodSpec(name=name, kd_method=name)
    kd_method, *pairs = rest.split(",")
    if not kd_method or "=" in kd_method:
        raise UserError(f"method {text!r}: expected {SPEC_SYNTAX}, with the kd_method right after '{name}='")
    overrides = []
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not _KEY.match(key) or not value:
            raise UserError(f"method {text!r}: {pair!r} is not KEY=VALUE ({SPEC_SYNTAX})")
        overrides.append((key, value))
    return MethodSpec(name=name, kd_method=kd_method, overrides=tuple(overrides))


def unknown_key_message(key: str, known: Iterable[str], where: str) -> str:
    """``'lamda_ot' is not a field of ...; did you mean 'lambda_ot'?``"""
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{key!r} is not a field of {where}{hint}"


def parse_methods(
    specs: Sequence[str], known_methods: Collection[str], config_fields: Collection[str]
) -> list[MethodSpec]:
    """Parse and check every spec: unique names, a registered ``kd_method``, override keys that are config fields
    (``config_fields``, the fields of ``EVLDistillConfig``) and not set by the comparison itself."""
    if not specs:
        raise UserError(f"`methods` is required: one or more of {SPEC_SYNTAX}")
    known = {name.lower() for name in known_methods}
    methods = [parse_method_spec(text) for text in specs]
    seen: set[str] = set()
    for text, method in zip(specs, methods):
        if method.name in seen:
            raise UserError(f"method {text!r}: the name {method.name!r} is used twice")
        seen.add(method.name)
        if method.kd_method.lower() not in known and method.name in config_fields:
            raise UserError(
                f"method {text!r}: {method.kd_method!r} is no kd_method; did you mean to pass {text} to every run? "
                "Put KEY=VALUE overrides before --methods (it takes the words that follow it), or write --KEY VALUE"
            )
        if method.kd_method.lower() not in known:
            raise UserError(
                f"method {text!r}: unknown kd_method {method.kd_method!r}; known: {', '.join(sorted(known))} "
                f"({SPEC_SYNTAX})"
            )
        keys = [key for key, _ in method.overrides]
        for key in keys:
            if key in RESERVED_KEYS:
                raise UserError(f"method {text!r}: {key!r} is set by the comparison for every run, not per method")
            if key not in config_fields:
                raise UserError(f"method {text!r}: {unknown_key_message(key, config_fields, 'EVLDistillConfig')}")
        if len(set(keys)) != len(keys):
            raise UserError(f"method {text!r}: a key is given twice")
    return methods
