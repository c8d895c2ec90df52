"""How cached feature rows ``(N, D)`` are stored: ``fp32``, ``bf16``, ``fp8`` (e4m3, per-token scales), ``pca:R``.

Each codec turns rows into named tensors written to a shard and back. The errors, per element of a row ``x``:

* ``fp32``: none (a teacher run in fp32 is reproduced bit for bit).
* ``bf16`` (default): none against a bf16 teacher (its states *are* bf16); against an fp32 teacher, the bf16 rounding,
  ``|e| <= 2**-8 |x|`` (7 stored mantissa bits).
* ``fp8``: ``x / s`` with the per-row scale ``s = max|x| / 448`` rounded to e4m3 (3 mantissa bits):
  ``|e| <= max(2**-4 |x|, 2**-10 s)`` (relative ``2**-4`` for normal numbers, half the subnormal step below).
  1 byte per element plus 4 per row.
* ``pca:R``: the coefficients ``(x - mean) @ basis.T`` on a rank-``R`` basis fitted on a sample of teacher rows
  (:mod:`evl_kd_trainer.cache.pca`), stored in bf16; the error is the truncation (reported as the retained variance)
  plus the coefficients' bf16 rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from evl_kd_trainer.cache.pca import PCABasis

FP8_MAX = 448.0  # largest finite float8_e4m3fn
COMPRESSIONS = ("fp32", "bf16", "fp8", "pca:R")
_STORE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class CompressionSpec:
    """A parsed ``compression`` value: ``kind`` (``fp32``/``bf16``/``fp8``/``pca``) and the PCA ``rank``."""

    kind: str
    rank: int = 0

    def __str__(self) -> str:
        return f"pca:{self.rank}" if self.kind == "pca" else self.kind


def parse_compression(value: str) -> CompressionSpec:
    """Parse ``"fp32" | "bf16" | "fp8" | "pca:R"`` (R >= 1)."""
    text = str(value).strip().lower()
    if text in ("fp32", "bf16", "fp8"):
        return CompressionSpec(text)
    if text.startswith("pca:"):
        rank = text[4:]
        if rank.isdigit() and int(rank) >= 1:
            return CompressionSpec("pca", int(rank))
    raise ValueError(f"`compression` must be one of {', '.join(COMPRESSIONS)} (R a positive integer), got {value!r}.")


def fp8_encode(rows: torch.Tensor) -> dict[str, torch.Tensor]:
    """e4m3 values of ``rows / scale`` and the per-row float32 scale ``max|row| / 448`` (1 for an all-zero row)."""
    x = rows.float()
    scale = x.abs().amax(dim=-1) / FP8_MAX
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    values = (x / scale[:, None]).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return {"": values, "scale": scale}


def fp8_decode(parts: dict[str, torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    return (parts[""].float() * parts["scale"].float()[:, None]).to(dtype)


class RowCodec:
    """Encode / decode one stream of rows (the hidden states, or the visual tokens) under one spec."""

    def __init__(self, spec: CompressionSpec, basis: PCABasis | None = None) -> None:
        if spec.kind == "pca" and basis is None:
            raise ValueError("pca compression needs its fitted basis.")
        self.spec = spec
        self.basis = basis

    def encode(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named parts (``""`` is the main tensor) to store for ``rows`` ``(N, D)``, on the CPU."""
        if self.spec.kind in _STORE_DTYPES:
            return {"": rows.detach().to(_STORE_DTYPES[self.spec.kind]).cpu()}
        if self.spec.kind == "fp8":
            return {name: part.cpu() for name, part in fp8_encode(rows.detach()).items()}
        return {"": self.basis.encode(rows.detach()).to(torch.bfloat16).cpu()}

    def decode(self, parts: dict[str, torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        """Rows ``(N, D)`` in ``dtype`` from the stored parts."""
        if self.spec.kind in _STORE_DTYPES:
            return parts[""].to(dtype)
        if self.spec.kind == "fp8":
            return fp8_decode(parts, dtype)
        return self.basis.decode(parts[""]).to(dtype)

    def width(self, dim: int) -> int:
        """Stored elements per row of width ``dim``."""
        return self.spec.rank if self.spec.kind == "pca" else dim
