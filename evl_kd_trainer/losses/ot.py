"""Sinkhorn optimal-transport visual feature matching, ``L_ot`` of EVL-ECG (paper section 2.1).

Per sample, the valid teacher tokens (already projected to the student's width) and student tokens are
L2-normalised and treated as uniform empirical measures mu and nu. With ``C_ij = ||t_i - s_j||^2`` the
entropic plan is

    P* = argmin_{P in Pi(mu, nu)} <P, C> - eps H(P)          (section 2.1, first display)

and the loss is the expected cost under it, ``L_ot = sum_ij P*_ij C_ij`` (second display), averaged
over the samples that have tokens on both sides.

Solver. GeomLoss (batched, zero weights on padding) gives a warm start: its eps-annealing runs a
fixed schedule that can leave the plan's marginals a few % off, so its dual potentials are polished
with log-domain Sinkhorn iterations until the L1 marginal error is below ``tol``. GeomLoss's cost
is ``|x - y|^2 / 2`` with temperature ``blur^2``; ``blur = sqrt(eps / 2)`` makes its problem the
paper's one (its potentials are then half of ours: ``F = 2 f``).

Gradients. The plan is computed without autograd and held constant: ``L_ot`` is differentiated as
``<P*, dC>``. By the envelope theorem this is the exact gradient of the regularised optimum
``OT_eps = min_P <P, C> - eps H(P)`` (what GeomLoss itself back-propagates), not of the expected cost
``<P*, C>``, whose full gradient adds ``<dP*, C>``. We use the envelope gradient on purpose: it is
the standard Sinkhorn-loss gradient, is cheap and stable (no back-propagation through hundreds of
iterations), and moves each student token towards the teacher tokens it is transported to, which is
the behaviour section 2.1 motivates. The reported value is still the paper's expected cost.

Precision. bf16/fp16 inputs are cast to float32 (float64 stays float64); the loss is returned in
that compute dtype, not the input dtype, so a small OT term is not rounded to 8 mantissa bits.
"""

from __future__ import annotations

import math
import warnings

import torch
from geomloss import SamplesLoss

from evl_kd_trainer.losses._checks import (
    check_mask,
    check_positive,
    check_rank,
    check_same_dims,
    compute_dtype,
    zero_connected,
)

# Two L2-normalised vectors are at most 2 apart; GeomLoss needs a bound (it crashes when all points coincide).
_UNIT_DIAMETER = 2.0


def l2_normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``x / max(||x||, eps)`` along the last dimension; a zero vector stays zero with a finite gradient."""
    # vector_norm has a safe backward at 0 (unlike sqrt(sum(x^2))), and the clamp avoids 0/0.
    return x / torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_min(eps)


def squared_distances(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Batched ``C_ij = ||x_i - y_j||^2`` for ``x`` (B, N, D) and ``y`` (B, M, D), shape (B, N, M).

    Uses ``|x|^2 + |y|^2 - 2 <x, y>`` (one matmul, no (B, N, M, D) difference tensor); for unit-norm
    inputs the cancellation error is ~1e-7 absolute in float32. Clamped at 0 against rounding.
    """
    xx = (x * x).sum(-1)
    yy = (y * y).sum(-1)
    return (xx[:, :, None] + yy[:, None, :] - 2.0 * torch.bmm(x, y.transpose(1, 2))).clamp_min(0.0)


def _log_weights(mask: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform weights over the valid tokens of each row (0 on padding) and their logs (-inf on padding)."""
    w = mask.to(dtype) / mask.sum(-1, keepdim=True).to(dtype)
    return w, torch.log(w)


@torch.no_grad()
def _entropic_plan(
    x: torch.Tensor,
    y: torch.Tensor,
    cost: torch.Tensor,
    x_mask: torch.Tensor,
    y_mask: torch.Tensor,
    epsilon: float,
    tol: float,
    max_iter: int,
    diameter: float = _UNIT_DIAMETER,
) -> tuple[torch.Tensor, float]:
    """Converged entropic plan (B, N, M) of ``min <P, C> - eps H(P)`` and its final L1 marginal error.

    Every row of ``x_mask`` and ``y_mask`` must have at least one True (callers drop empty samples).
    """
    a, log_a = _log_weights(x_mask, cost.dtype)
    b, log_b = _log_weights(y_mask, cost.dtype)
    # Warm start: GeomLoss's annealed dual potentials, rescaled from its |x-y|^2/2 cost to ours.
    solver = SamplesLoss(
        "sinkhorn",
        p=2,
        blur=math.sqrt(epsilon / 2.0),
        debias=False,
        potentials=True,
        diameter=diameter,
        backend="tensorized",
    )
    f, _ = solver(a, x.masked_fill(~x_mask[..., None], 0.0), b, y.masked_fill(~y_mask[..., None], 0.0))
    # Potentials on zero-weight points are meaningless (possibly non-finite): they never enter a sum below.
    f_pot = torch.where(x_mask, 2.0 * f.to(cost.dtype), torch.zeros_like(a))

    def update_g(f_cur: torch.Tensor) -> torch.Tensor:
        # g_j = -eps log sum_i a_i exp((f_i - C_ij) / eps): makes the column marginals exact.
        return -epsilon * torch.logsumexp(log_a[:, :, None] + (f_cur[:, :, None] - cost) / epsilon, dim=1)

    def update_f(g_cur: torch.Tensor) -> torch.Tensor:
        return -epsilon * torch.logsumexp(log_b[:, None, :] + (g_cur[:, None, :] - cost) / epsilon, dim=2)

    g_pot = update_g(f_pot)
    err = float("inf")
    for iteration in range(max_iter + 1):
        f_new = update_f(g_pot)
        # Reading the error back is a host sync on a GPU: every iteration at first (a good warm start meets the
        # tolerance at once), then every 8th; the extra iterations only converge further.
        if iteration < 4 or iteration % 8 == 0 or iteration == max_iter:
            # With g from f_pot, plan(f_pot, g_pot) has exact column marginals and row sums
            # a_i exp((f_pot_i - f_new_i) / eps): its L1 row error comes for free from the next f-update.
            ratio = torch.exp(((f_pot - f_new) / epsilon).clamp(max=50.0)) - 1.0
            err = float(torch.where(x_mask, a * ratio.abs(), torch.zeros_like(a)).sum(-1).max())
            if err <= tol or math.isnan(err):  # NaN inputs never converge: stop and let the caller see NaN
                break
        f_pot = f_new
        g_pot = update_g(f_pot)
    if not err <= tol:
        warnings.warn(
            f"Sinkhorn did not reach marginal error {tol:g} in {max_iter} iterations (error {err:.3g}); "
            "raise max_iter or epsilon (trainer config: `sinkhorn_max_iter`, `sinkhorn_epsilon`).",
            RuntimeWarning,
            stacklevel=3,
        )
    log_plan = log_a[:, :, None] + log_b[:, None, :] + (f_pot[:, :, None] + g_pot[:, None, :] - cost) / epsilon
    return log_plan.exp(), err


def _validate(
    teacher_tokens: torch.Tensor,
    student_tokens: torch.Tensor,
    teacher_mask: torch.Tensor | None,
    student_mask: torch.Tensor | None,
    epsilon: float,
    tol: float,
    max_iter: int,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    check_rank("teacher_tokens", teacher_tokens, 3, "(B, N, D)")
    check_rank("student_tokens", student_tokens, 3, "(B, M, D)")
    names = ("teacher_tokens", "student_tokens")
    check_same_dims(names, (teacher_tokens, student_tokens), [0], "batch size")
    # The teacher must already be projected to the student's width (VisualProjector) for C to exist.
    check_same_dims(names, (teacher_tokens, student_tokens), [2], "token width D (project the teacher first)")
    check_positive("epsilon", epsilon)
    check_positive("tol", tol)
    if int(max_iter) < 0:
        raise ValueError(f"max_iter must be >= 0, got {max_iter!r}.")
    t_mask = check_mask("teacher_mask", teacher_mask, tuple(teacher_tokens.shape[:2]))
    s_mask = check_mask("student_mask", student_mask, tuple(student_tokens.shape[:2]))
    return t_mask, s_mask


def sinkhorn_ot_loss(
    teacher_tokens: torch.Tensor,
    student_tokens: torch.Tensor,
    teacher_mask: torch.Tensor | None = None,
    student_mask: torch.Tensor | None = None,
    epsilon: float = 0.1,
    *,
    tol: float = 1e-4,
    max_iter: int = 1000,
) -> torch.Tensor:
    """``L_ot`` of section 2.1: expected squared distance under the converged entropic OT plan.

    Args:
        teacher_tokens: (B, N, D) teacher visual tokens, already projected to the student's width.
        student_tokens: (B, M, D) student visual tokens.
        teacher_mask, student_mask: (B, N) / (B, M), True (or 1) on real tokens; ``None`` = all real.
        epsilon: entropic regularisation eps (the paper fixes 0.1).
        tol: L1 marginal error of the plan at which Sinkhorn stops (per sample, both marginals).
        max_iter: cap on the polishing iterations after GeomLoss's warm start (a warning if hit).

    Returns:
        Scalar in float32 (float64 for float64 inputs): the mean of ``sum_ij P*_ij C_ij`` over the
        samples with at least one real token on each side, or a graph-connected 0 when none has one.
        Gradients flow through ``C`` with the plan held constant (see the module docstring).
    """
    t_mask, s_mask = _validate(teacher_tokens, student_tokens, teacher_mask, student_mask, epsilon, tol, max_iter)
    batch, n_t, _ = teacher_tokens.shape
    n_s = student_tokens.shape[1]
    dev = teacher_tokens.device
    t_mask = torch.ones(batch, n_t, dtype=torch.bool, device=dev) if t_mask is None else t_mask.to(dev)
    s_mask = torch.ones(batch, n_s, dtype=torch.bool, device=dev) if s_mask is None else s_mask.to(dev)
    keep = t_mask.any(-1) & s_mask.any(-1)
    if not bool(keep.any()):
        return zero_connected(teacher_tokens, student_tokens)

    dtype = compute_dtype(teacher_tokens, student_tokens)
    t_mask, s_mask = t_mask[keep], s_mask[keep]
    # torch.where (not multiplication) so inf/NaN in padding cannot leak into values or gradients.
    # Padding is zeroed before normalising (a zero vector stays zero): masking after would let NaN
    # padding reach the normalisation's backward (0 * NaN).
    t = l2_normalize(torch.where(t_mask[..., None], teacher_tokens[keep].to(dtype), 0.0))
    s = l2_normalize(torch.where(s_mask[..., None], student_tokens[keep].to(dtype), 0.0))
    cost = squared_distances(t, s)
    plan, _ = _entropic_plan(t.detach(), s.detach(), cost.detach(), t_mask, s_mask, epsilon, tol, int(max_iter))
    return (plan * cost).sum(dim=(1, 2)).mean()


def sinkhorn_plan(
    teacher_tokens: torch.Tensor,
    student_tokens: torch.Tensor,
    epsilon: float = 0.1,
    *,
    normalize: bool = True,
    tol: float = 1e-4,
    max_iter: int = 1000,
) -> torch.Tensor:
    """The converged entropic plan ``P*`` (N, M) of section 2.1 for one sample (e.g. Figure 2's heatmap).

    Args:
        teacher_tokens: (N, D) projected teacher tokens of one sample.
        student_tokens: (M, D) student tokens of the same sample.
        epsilon, tol, max_iter: as in :func:`sinkhorn_ot_loss`.
        normalize: L2-normalise the tokens first, as the loss does.

    Returns:
        A detached (N, M) float32 (float64 for float64 inputs) plan; rows sum to 1/N, columns to 1/M.
    """
    check_rank("teacher_tokens", teacher_tokens, 2, "(N, D)")
    check_rank("student_tokens", student_tokens, 2, "(M, D)")
    check_same_dims(("teacher_tokens", "student_tokens"), (teacher_tokens, student_tokens), [1], "token width D")
    _validate(teacher_tokens[None], student_tokens[None], None, None, epsilon, tol, max_iter)
    dtype = compute_dtype(teacher_tokens, student_tokens)
    with torch.no_grad():
        t = teacher_tokens.detach().to(dtype)[None]
        s = student_tokens.detach().to(dtype)[None]
        if normalize:
            t, s = l2_normalize(t), l2_normalize(s)
        cost = squared_distances(t, s)
        t_mask = torch.ones(t.shape[:2], dtype=torch.bool, device=t.device)
        s_mask = torch.ones(s.shape[:2], dtype=torch.bool, device=s.device)
        # GeomLoss needs an upper bound on point distances: 2 for unit vectors, else the bounding box.
        both = torch.cat([t[0], s[0]])
        diameter = _UNIT_DIAMETER if normalize else max(float((both.amax(0) - both.amin(0)).norm()), 1e-3)
        plan, _ = _entropic_plan(t, s, cost, t_mask, s_mask, epsilon, tol, int(max_iter), diameter)
    return plan[0]
