"""A small name -> object registry, shared by the loss registry and the KD-method registry.

Modeled on torchdistill's registries: each family module registers its public callables by name, so
recipes select them with a string and new families plug in without touching the trainer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T", bound=Callable[..., Any])


class Registry:
    """Case-insensitive mapping of names to callables, refusing silent replacement."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Callable[..., Any]] = {}

    def register(self, name: str) -> Callable[[T], T]:
        key = name.strip().lower()

        def decorator(obj: T) -> T:
            # Replacing an entry would silently change what a recipe trains.
            if key in self._entries and self._entries[key] is not obj:
                raise ValueError(f"A {self.kind} named {key!r} is already registered ({self._entries[key]!r}).")
            self._entries[key] = obj
            return obj

        return decorator

    def get(self, name: str) -> Callable[..., Any]:
        key = str(name).strip().lower()
        if key not in self._entries:
            known = ", ".join(self.names()) or "(none)"
            raise ValueError(f"Unknown {self.kind} {name!r}. Known {self.kind}s: {known}.")
        return self._entries[key]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.strip().lower() in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
