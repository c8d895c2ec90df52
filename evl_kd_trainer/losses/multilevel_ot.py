"""Multi-Level Optimal Transport (MultiLevelOT; Cui et al., "Multi-Level Optimal Transport for Universal
Cross-Tokenizer Knowledge Distillation on Language Models", AAAI 2025).

Pre-processing (as in the authors' code, built on ULD's): each position's logits are divided by their
standard deviation over the vocabulary (``z / (std(z) + 1e-4)``, no mean shift: a softmax is shift
invariant), turned into probabilities by a softmax over the *full* vocabulary, sorted in descending
order and truncated to the top ``k = 50``. Softmax comes first, so the kept entries are the model's
real probabilities (they do not sum to 1); top-k-then-softmax would instead renormalise the head.

Token level (the paper's holistic absolute-difference loss plus its logarithmic loss), per
index-aligned answer position:

    L_token = sum_k |s_k - t_k|  +  0.1 * sum_k t^_k (log t^_k - log s^_k)

where ``s^, t^`` are the top-k vectors renormalised to distributions. The log term is the cross-entropy
``-sum t^ log s^`` minus the teacher's entropy: the gradient for the student is the cross-entropy's,
and the term is 0 for identical distributions. (Deviation, documented: the authors' code applies a
second softmax to the already-truncated probabilities before its cross-entropy; renormalising keeps
the term a proper divergence.)

Sequence level (the paper's Sinkhorn distance loss), per sample: entropic OT between the set of the
student's answer positions and the set of the teacher's, uniform weights, cost the L1 distance between
their top-k vectors, ``reg = 0.1``, 20 Sinkhorn iterations; the loss is ``<P, C>`` with gradients
through the iterations (as the authors' code). Unlike the token level it needs no index alignment, so
each model's *whole* answer span is used (the authors' code reuses the truncated, padded ULD tensors).

Total (the method's): ``CE + lambda * (L_token + 0.1 * L_seq)``.
"""

from __future__ import annotations

import math

import torch

from evl_kd_trainer.losses.alignment import masked_sample_mean


def standardize_logits(logits: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """Divide each position's logits by their (unbiased) standard deviation over the vocabulary, plus ``eps``."""
    logits = logits.float()
    return logits / (logits.std(dim=-1, keepdim=True) + eps)


def topk_sorted_log_probs(logits: torch.Tensor, k: int, eps: float = 1e-4) -> torch.Tensor:
    """Log-probabilities of the ``k`` most likely tokens after std-standardisation, descending.

    Log-space so the logarithmic term stays finite for tiny probabilities; ``.exp()`` gives the
    top-k probabilities themselves (softmax over the full vocabulary first, then top-k).
    """
    log_probs = torch.log_softmax(standardize_logits(logits, eps), dim=-1)
    return log_probs.topk(k, dim=-1, sorted=True).values


def _effective_k(top_k: int, *vocab_sizes: int) -> int:
    # Both models must provide k entries for the vectors to be comparable index by index.
    return max(1, min(top_k, *vocab_sizes))


def token_level_terms(
    student_log_topk: torch.Tensor, teacher_log_topk: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position absolute-difference and logarithmic terms from top-k log-probabilities.

    Returns ``(l1, log_term)``, each with the leading shape of the inputs.
    """
    l1 = (student_log_topk.exp() - teacher_log_topk.exp()).abs().sum(dim=-1)
    t_hat = teacher_log_topk - torch.logsumexp(teacher_log_topk, dim=-1, keepdim=True)
    s_hat = student_log_topk - torch.logsumexp(student_log_topk, dim=-1, keepdim=True)
    log_term = (t_hat.exp() * (t_hat - s_hat)).sum(dim=-1)
    return l1, log_term


def mlot_token_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    top_k: int = 50,
    log_weight: float = 0.1,
    std_eps: float = 1e-4,
) -> torch.Tensor:
    """MultiLevelOT token-level loss (absolute difference + ``log_weight`` x logarithmic term).

    Args:
        student_logits: ``(B, R, Vs)``; teacher_logits: ``(B, R, Vt)``, index-aligned answer positions.
        mask: ``(B, R)`` boolean of aligned pairs (``None``: all).
        top_k: entries kept after sorting (50 in the paper); capped at the smaller vocabulary.
        log_weight: weight of the logarithmic term (0.1 in the authors' code).
        std_eps: added to the standard deviation when standardising logits.

    Returns:
        Scalar, averaged over each sample's valid positions, then over samples.
    """
    if student_logits.shape[:2] != teacher_logits.shape[:2]:
        raise ValueError("student and teacher logits must be aligned to the same (B, R)")
    if mask is None:
        mask = torch.ones(student_logits.shape[:2], dtype=torch.bool, device=student_logits.device)
    k = _effective_k(top_k, student_logits.shape[-1], teacher_logits.shape[-1])
    l1, log_term = token_level_terms(
        topk_sorted_log_probs(student_logits, k, std_eps), topk_sorted_log_probs(teacher_logits, k, std_eps)
    )
    return masked_sample_mean(l1 + log_weight * log_term, mask)


def sinkhorn_plan(cost: torch.Tensor, reg: float = 0.1, n_iters: int = 20) -> torch.Tensor:
    """Entropic OT plan with uniform marginals, log-domain Sinkhorn (Cuturi 2013).

    Iterates ``f = reg * (log a - LSE_j((g_j - C_ij) / reg))`` then the same for ``g`` (``v`` first fixed
    at 1, i.e. ``g = 0``), which is the scaling ``u = a / K v``, ``v = b / K^T u`` computed stably.

    Args:
        cost: ``(n, m)`` cost matrix. reg: entropic regularisation. n_iters: full (f, g) updates.

    Returns:
        ``(n, m)`` plan ``P_ij = exp((f_i + g_j - C_ij) / reg)``.
    """
    n, m = cost.shape
    log_a = torch.full((n,), -math.log(n), dtype=cost.dtype, device=cost.device)
    log_b = torch.full((m,), -math.log(m), dtype=cost.dtype, device=cost.device)
    f = torch.zeros(n, dtype=cost.dtype, device=cost.device)
    g = torch.zeros(m, dtype=cost.dtype, device=cost.device)
    for _ in range(n_iters):
        f = reg * (log_a - torch.logsumexp((g.unsqueeze(0) - cost) / reg, dim=1))
        g = reg * (log_b - torch.logsumexp((f.unsqueeze(1) - cost) / reg, dim=0))
    return torch.exp((f.unsqueeze(1) + g.unsqueeze(0) - cost) / reg)


def mlot_sequence_loss(
    student_logits: torch.Tensor,
    student_mask: torch.Tensor,
    teacher_logits: torch.Tensor,
    teacher_mask: torch.Tensor,
    top_k: int = 50,
    reg: float = 0.1,
    n_iters: int = 20,
    std_eps: float = 1e-4,
) -> torch.Tensor:
    """MultiLevelOT sequence-level loss: Sinkhorn distance between the answer positions of the two models.

    Args:
        student_logits: ``(B, Ls, Vs)`` with ``student_mask`` ``(B, Ls)`` selecting the answer positions.
        teacher_logits: ``(B, Lt, Vt)`` with ``teacher_mask`` ``(B, Lt)``; spans may differ in length.
        top_k, reg, n_iters, std_eps: see the module docstring (50, 0.1, 20, 1e-4).

    Returns:
        Scalar ``<P, C>`` averaged over samples with a non-empty span on both sides (0 if none).
    """
    k = _effective_k(top_k, student_logits.shape[-1], teacher_logits.shape[-1])
    losses = []
    for b in range(student_logits.shape[0]):
        s_rows = student_logits[b][student_mask[b].bool()]
        t_rows = teacher_logits[b][teacher_mask[b].bool()]
        if s_rows.shape[0] == 0 or t_rows.shape[0] == 0:
            continue  # nothing to transport: an empty marginal has no plan
        s_top = topk_sorted_log_probs(s_rows, k, std_eps).exp()
        t_top = topk_sorted_log_probs(t_rows, k, std_eps).exp()
        cost = torch.cdist(s_top, t_top, p=1)
        losses.append((sinkhorn_plan(cost, reg, n_iters) * cost).sum())
    if not losses:
        return student_logits.float().sum() * 0.0
    return torch.stack(losses).mean()
