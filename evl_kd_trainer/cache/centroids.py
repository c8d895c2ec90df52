"""Optional visual-token reduction: one sample's ``V`` visual tokens -> ``C`` weighted k-means centroids.

The Sinkhorn term compares two *distributions* of tokens (uniform weights over each side's tokens); replacing the
teacher's tokens by centroids weighted with the share of tokens each one stands for keeps that distribution's mass
where it was, so the OT marginal of the teacher side becomes those weights instead of uniform. A sample with at most
``C`` tokens is kept as it is (uniform weights): exact.

The initialisation is deterministic (evenly spaced tokens), so the same teacher tokens always give the same
centroids; Lloyd iterations stop when no assignment changes. Empty clusters are dropped (fewer than ``C`` rows).
"""

from __future__ import annotations

import torch


def weighted_centroids(tokens: torch.Tensor, count: int, iterations: int = 25) -> tuple[torch.Tensor, torch.Tensor]:
    """``(centroids (C', D), weights (C',))`` of ``tokens`` ``(V, D)``, ``C' <= count``, weights summing to 1.

    Computed in float32 on the tokens' device; centroids come back in float32.
    """
    if count < 1:
        raise ValueError(f"the number of centroids must be >= 1, got {count}.")
    x = tokens.detach().float()
    n = int(x.shape[0])
    if n == 0:
        return x.new_zeros(0, x.shape[-1]), x.new_zeros(0)
    if n <= count:
        return x.clone(), x.new_full((n,), 1.0 / n)
    start = torch.linspace(0, n - 1, count, device=x.device).round().long()
    centroids = x[start].clone()
    assignment = torch.full((n,), -1, dtype=torch.long, device=x.device)
    for _ in range(max(1, iterations)):
        new_assignment = torch.cdist(x, centroids).argmin(dim=1)
        if torch.equal(new_assignment, assignment):
            break
        assignment = new_assignment
        sums = torch.zeros_like(centroids).index_add_(0, assignment, x)
        sizes = torch.bincount(assignment, minlength=count).to(x.dtype)
        filled = sizes > 0
        centroids = torch.where(filled[:, None], sums / sizes.clamp_min(1)[:, None], centroids)
    sizes = torch.bincount(assignment, minlength=count)
    keep = sizes > 0
    return centroids[keep], sizes[keep].to(x.dtype) / n
