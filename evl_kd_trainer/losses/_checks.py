"""Argument validation shared by the EVL-ECG loss terms (issue 2, item 8).

Every check raises ``ValueError`` naming the offending argument and the shapes involved, and runs
before any heavy work so a wrong call fails fast and readably instead of deep inside a matmul.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch


def shape_str(x: torch.Tensor) -> str:
    """``(2, 5, 8)``-style rendering of a tensor's shape for error messages."""
    return "(" + ", ".join(str(d) for d in x.shape) + ")"


def check_tensor(name: str, x: object) -> torch.Tensor:
    """``x`` must be a tensor."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}.")
    return x


def check_rank(name: str, x: object, rank: int, layout: str) -> torch.Tensor:
    """``x`` must be a floating-point tensor of rank ``rank``; ``layout`` (e.g. ``"(B, N, D)"``) goes in the message."""
    x = check_tensor(name, x)
    if x.dim() != rank:
        raise ValueError(f"{name} must have shape {layout} (rank {rank}), got shape {shape_str(x)}.")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype} with shape {shape_str(x)}.")
    return x


def check_same_dims(names: Sequence[str], tensors: Sequence[torch.Tensor], dims: Iterable[int], what: str) -> None:
    """All ``tensors`` must agree on each dimension in ``dims`` (``what`` names them, e.g. ``"batch size"``)."""
    for dim in dims:
        sizes = {t.shape[dim] for t in tensors}
        if len(sizes) > 1:
            parts = ", ".join(f"{n} {shape_str(t)}" for n, t in zip(names, tensors))
            raise ValueError(f"Mismatched {what}: {parts}.")


def check_mask(name: str, mask: object, expected: tuple[int, ...]) -> torch.Tensor | None:
    """Validate an optional padding mask and return it as ``torch.bool`` (``None`` passes through).

    Accepted: a bool tensor, or an integer/float tensor holding only 0 and 1 (what tokenizers return as
    ``attention_mask``). Anything else is ambiguous, so it is refused rather than silently thresholded.
    """
    if mask is None:
        return None
    mask = check_tensor(name, mask)
    if tuple(mask.shape) != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)}, got shape {shape_str(mask)}.")
    if mask.dtype == torch.bool:
        return mask
    if mask.is_complex():
        raise ValueError(f"{name} must be boolean (or 0/1 valued), got dtype {mask.dtype}.")
    if mask.numel() and not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError(f"{name} must be boolean or hold only 0 and 1, got other values (dtype {mask.dtype}).")
    return mask != 0


def check_positive(name: str, value: float) -> float:
    """``value`` must be a finite number > 0."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}.") from None
    if not (v > 0 and v != float("inf")):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")
    return v


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    """``value`` must be one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}.")
    return str(value)


def compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """Precision the losses compute in: float64 when any input is float64, float32 otherwise.

    bf16/fp16 inputs are upcast: squared distances, softmax-like Sinkhorn updates and long sums lose
    several digits in 8-bit mantissas, while float64 is kept so tests can compare against references.
    """
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def zero_connected(*tensors: torch.Tensor) -> torch.Tensor:
    """A scalar 0 that is part of the inputs' autograd graph (``backward`` works and gives zero gradients).

    Built from empty slices, so it stays exactly 0 even when the inputs hold inf/NaN in padding
    (``x.sum() * 0`` would turn into NaN there).
    """
    dtype = compute_dtype(*tensors)
    out = tensors[0].new_zeros((), dtype=dtype)
    for t in tensors:
        out = out + t.reshape(-1)[:0].sum().to(dtype)
    return out
