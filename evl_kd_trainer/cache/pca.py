"""A rank-R principal basis of teacher features, fitted once on a sample and stored with the cache.

The fit streams rows into float64 sums (``sum x``, ``sum x x^T``: D x D memory, whatever the sample size) and takes
the top-R eigenvectors of the covariance. A row ``x`` is stored as its coefficients ``c = (x - mean) @ basis.T``
and read back as ``c @ basis + mean``, exact up to the dropped directions; the fraction of the sample's variance
the basis keeps is :attr:`PCABasis.retained_variance`.

The aligners' teacher-side maps are linear, so they can consume coefficients directly:
``W x + b = (W @ basis.T) c + (W @ mean + b)`` (:meth:`PCABasis.project_linear`), i.e. a rank-R key/value or visual
projection with no reconstruction at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PCABasis:
    """``basis`` ``(R, D)`` (orthonormal rows), ``mean`` ``(D,)``, both float32, and the retained variance."""

    basis: torch.Tensor
    mean: torch.Tensor
    retained_variance: float

    @property
    def rank(self) -> int:
        return int(self.basis.shape[0])

    def to(self, device: torch.device | str) -> PCABasis:
        return PCABasis(self.basis.to(device), self.mean.to(device), self.retained_variance)

    def encode(self, rows: torch.Tensor) -> torch.Tensor:
        """Coefficients ``(N, R)`` (float32) of rows ``(N, D)``."""
        basis = self.basis.to(rows.device)
        return (rows.float() - self.mean.to(rows.device)) @ basis.T

    def decode(self, coeffs: torch.Tensor) -> torch.Tensor:
        """Rows ``(N, D)`` (float32) from coefficients ``(N, R)``: ``coeffs @ basis + mean``."""
        basis = self.basis.to(coeffs.device)
        return coeffs.float() @ basis + self.mean.to(coeffs.device)

    def project_linear(
        self, weight: torch.Tensor, bias: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A linear map ``x -> weight @ x + bias`` (``weight`` ``(O, D)``) rewritten on coefficients:
        ``(weight @ basis.T, weight @ mean + bias)``, ``(O, R)`` and ``(O,)``."""
        basis, mean = self.basis.to(weight.device, weight.dtype), self.mean.to(weight.device, weight.dtype)
        new_bias = weight @ mean
        if bias is not None:
            new_bias = new_bias + bias
        return weight @ basis.T, new_bias

    def state_dict(self, prefix: str) -> dict[str, torch.Tensor]:
        return {
            f"{prefix}.basis": self.basis.contiguous(),
            f"{prefix}.mean": self.mean.contiguous(),
            f"{prefix}.retained_variance": torch.tensor([self.retained_variance], dtype=torch.float64),
        }

    @classmethod
    def from_state_dict(cls, tensors: dict[str, torch.Tensor], prefix: str) -> PCABasis:
        return cls(
            tensors[f"{prefix}.basis"].float(),
            tensors[f"{prefix}.mean"].float(),
            float(tensors[f"{prefix}.retained_variance"][0]),
        )


class PCAFitter:
    """Streaming covariance of rows of width ``dim``; :meth:`fit` gives the rank-``rank`` basis."""

    def __init__(self, dim: int, rank: int) -> None:
        if rank > dim:
            raise ValueError(f"pca rank {rank} exceeds the feature width {dim}.")
        self.dim, self.rank = dim, rank
        self.count = 0
        self.sum = torch.zeros(dim, dtype=torch.float64)
        self.outer = torch.zeros(dim, dim, dtype=torch.float64)

    def update(self, rows: torch.Tensor) -> None:
        x = rows.detach().to("cpu", torch.float64)
        self.count += int(x.shape[0])
        self.sum += x.sum(0)
        self.outer += x.T @ x

    def fit(self) -> PCABasis:
        if self.count < 2:
            raise ValueError(f"a PCA basis needs at least 2 sampled rows, got {self.count}.")
        mean = self.sum / self.count
        covariance = self.outer / self.count - torch.outer(mean, mean)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)  # ascending
        eigenvalues = eigenvalues.clamp_min(0.0)
        top = eigenvectors[:, -self.rank :].flip(-1).T  # (R, D), largest first
        total = float(eigenvalues.sum())
        kept = float(eigenvalues[-self.rank :].sum())
        retained = kept / total if total > 0 else 1.0
        return PCABasis(top.float().contiguous(), mean.float(), retained)
