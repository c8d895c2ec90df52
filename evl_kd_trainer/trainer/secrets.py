"""Hub tokens stay in memory: a training config pickles, copies into JSON and prints without them.

``Trainer`` writes ``torch.save(self.args)`` as ``training_args.bin`` into ``output_dir``, into every checkpoint and
into every Hub push, so a ``hub_token`` set in the config used to be stored (and uploaded) in plain text; the
dataclass ``repr`` printed it too, and ``to_dict`` masks only top-level ``*_token`` fields, not a ``token`` inside
``model_init_kwargs``. The token is only needed by the live trainer (to push), so :class:`SecretFreeArgs` drops it
from every pickle and masks it in every text form. Resume never reads ``training_args.bin`` (the trainer's state
comes from ``trainer_state.json``), and a reloaded config simply has no token: the Hub client then falls back to
``HF_TOKEN`` or the stored login, as it does for any config without one.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

# Top-level config fields that hold a credential (`push_to_hub_token` is the name older transformers used).
SECRET_FIELDS = ("hub_token", "push_to_hub_token")
# Keys that hold a credential inside dict-valued fields (`model_init_kwargs={"token": ...}`).
SECRET_KEYS = frozenset({"token", "use_auth_token", "hub_token", "push_to_hub_token", "hf_token"})
MASK = "<TOKEN>"


def redact(value: Any, replacement: Any = MASK) -> Any:
    """``value`` with every credential entry of nested dicts / lists replaced (a copy; ``value`` is not changed)."""
    if isinstance(value, dict):
        return {
            # only string values: `use_auth_token=True` is a switch, not a secret
            key: replacement
            if isinstance(key, str) and key.lower() in SECRET_KEYS and isinstance(item, str) and item
            else redact(item, replacement)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item, replacement) for item in value]
    return value


class SecretFreeArgs:
    """Mixin for ``TrainingArguments`` dataclasses: no credential in a pickle, ``to_dict``, ``str`` or ``repr``.

    Put it before the ``TrainingArguments`` subclass in the bases and decorate with ``@dataclass(repr=False)`` (a
    generated ``repr`` would print every field again). ``copy.copy`` / ``copy.deepcopy`` keep the token: a copy in
    memory may still push.
    """

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in SECRET_FIELDS:
            if state.get(name) is not None:
                state[name] = None
        return {key: redact(value, None) if isinstance(value, dict) else value for key, value in state.items()}

    def __copy__(self) -> SecretFreeArgs:
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

    def __deepcopy__(self, memo: dict[int, Any]) -> SecretFreeArgs:
        new = object.__new__(type(self))
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return new

    def to_dict(self) -> dict[str, Any]:
        values = super().to_dict()  # type: ignore[misc]  # masks the top-level `*_token` fields
        return {key: redact(value) for key, value in values.items()}

    def __str__(self) -> str:
        # The layout of `TrainingArguments.__str__`, with nested credentials masked as well.
        shown = {}
        for item in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, item.name)
            shown[item.name] = f"<{item.name.upper()}>" if item.name.endswith("_token") else redact(value)
        body = "".join(f"{key}={value},\n" for key, value in sorted(shown.items()))
        return f"{type(self).__name__}(\n{body})"

    __repr__ = __str__
