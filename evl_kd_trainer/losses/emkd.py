"""EM-KD (Feng et al., "EM-KD: Distilling Efficient Multimodal Large Language Model with Unbalanced Vision
Tokens", AAAI 2026 / arXiv 2511.21106): vision-token matching, VSD and VLAD.

* Vision token matching: vision hidden states are decoded by each model's LM head into *vision logits*;
  the matching cost ``C[j, i] = || z^t_j - z^s_i ||_1`` (Manhattan distance, teacher token j vs student
  token i) is solved by the Hungarian algorithm (``scipy.optimize.linear_sum_assignment`` on a detached
  copy), giving one distinct teacher token per student token when the teacher has more.
* VSD (vision semantic distillation): reverse KL ``KL(p_s || p_t)`` between matched vision logits.
* VLAD (vision-language affinity distillation): affinity ``A = norm(text) norm(vision)^T`` (cosine
  similarities of answer hidden states with the matched vision tokens), ``SmoothL1(A_s, A_t)``.

Deliberate cross-vocabulary adaptation (``cross_vocab="sorted_probs"``): the Manhattan cost and the KL
above index both logit vectors by the *same* token ids, which is meaningless between PULSE/Vicuna
(32k) and Qwen (152k). In that mode both are computed on vocabulary-agnostic features, as ULD and
MultiLevelOT do: the top-k probabilities sorted in descending order (k capped at the smaller
vocabulary, so no zero padding is needed), L1 between them for the cost, and the reverse KL between
them renormalised to distributions for VSD. With equal vocabularies ``cross_vocab="same_vocab"`` gives
the original per-token cost and full-vocabulary reverse KL.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

CROSS_VOCAB_MODES = ("sorted_probs", "same_vocab")


def sorted_topk_log_probs(logits: torch.Tensor, k: int, temperature: float = 1.0) -> torch.Tensor:
    """Descending top-k log-probabilities of the full-vocabulary softmax (float32)."""
    return torch.log_softmax(logits.float() / temperature, dim=-1).topk(k, dim=-1, sorted=True).values


def matching_features(logits: torch.Tensor, cross_vocab: str, k: int) -> torch.Tensor:
    """What the matching cost compares: raw logits (``"same_vocab"``) or sorted top-k probabilities."""
    if cross_vocab == "same_vocab":
        return logits.float()
    if cross_vocab == "sorted_probs":
        return sorted_topk_log_probs(logits, k).exp()
    raise ValueError(f"Unknown emkd cross_vocab mode {cross_vocab!r}; expected one of {CROSS_VOCAB_MODES}")


@torch.no_grad()
def hungarian_match(cost: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimum-cost one-to-one assignment of a ``(n_teacher, n_student)`` cost matrix.

    Returns ``(teacher_idx, student_idx)`` long tensors of length ``min(n_teacher, n_student)``, ordered
    by student index (the assignment itself is not differentiable; gradients flow through the losses
    computed on the matched tokens).
    """
    rows, cols = linear_sum_assignment(cost.detach().double().cpu().numpy())
    order = np.argsort(cols, kind="stable")
    dev = cost.device
    return torch.as_tensor(rows[order], device=dev), torch.as_tensor(cols[order], device=dev)


def match_vision_tokens(
    student_vision_logits: torch.Tensor,
    teacher_vision_logits: torch.Tensor,
    cross_vocab: str = "sorted_probs",
    top_k: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hungarian matching of one sample's vision tokens on the L1 cost of their logit features.

    Args:
        student_vision_logits: ``(Ns, Vs)``; teacher_vision_logits: ``(Nt, Vt)``.
        cross_vocab: ``"sorted_probs"`` (any vocabularies) or ``"same_vocab"`` (requires ``Vs == Vt``).
        top_k: entries of the sorted-probability features (capped at the smaller vocabulary).

    Returns:
        ``(teacher_idx, student_idx)`` as :func:`hungarian_match`.
    """
    k = max(1, min(top_k, student_vision_logits.shape[-1], teacher_vision_logits.shape[-1]))
    if cross_vocab == "same_vocab" and student_vision_logits.shape[-1] != teacher_vision_logits.shape[-1]:
        raise ValueError("emkd_cross_vocab='same_vocab' needs equal vocabularies; use 'sorted_probs' across tokenizers")
    with torch.no_grad():
        cost = torch.cdist(
            matching_features(teacher_vision_logits, cross_vocab, k),
            matching_features(student_vision_logits, cross_vocab, k),
            p=1,
        )
    return hungarian_match(cost)


def vsd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    cross_vocab: str = "sorted_probs",
    top_k: int = 64,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Vision semantic distillation: mean over matched pairs of the reverse KL ``KL(p_s || p_t)``.

    Args:
        student_logits, teacher_logits: ``(N, Vs)`` / ``(N, Vt)``, row ``n`` of each already matched.
        cross_vocab: ``"same_vocab"``: softmax over the shared vocabulary (EM-KD's original VSD);
            ``"sorted_probs"``: top-k sorted probabilities renormalised (the documented adaptation).
        top_k, temperature: feature size (capped at the smaller vocabulary) and softmax temperature.
    """
    if student_logits.shape[0] == 0:
        return student_logits.float().sum() * 0.0
    if cross_vocab == "same_vocab":
        if student_logits.shape[-1] != teacher_logits.shape[-1]:
            raise ValueError("cross_vocab='same_vocab' needs equal vocabularies")
        s_log = torch.log_softmax(student_logits.float() / temperature, dim=-1)
        t_log = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)
    elif cross_vocab == "sorted_probs":
        k = max(1, min(top_k, student_logits.shape[-1], teacher_logits.shape[-1]))
        s_log = sorted_topk_log_probs(student_logits, k, temperature)
        t_log = sorted_topk_log_probs(teacher_logits, k, temperature)
        s_log = s_log - torch.logsumexp(s_log, dim=-1, keepdim=True)
        t_log = t_log - torch.logsumexp(t_log, dim=-1, keepdim=True)
    else:
        raise ValueError(f"Unknown cross_vocab {cross_vocab!r}; expected one of {CROSS_VOCAB_MODES}")
    return (s_log.exp() * (s_log - t_log)).sum(dim=-1).mean()


def affinity(text: torch.Tensor, vision: torch.Tensor) -> torch.Tensor:
    """Cosine-similarity matrix ``(R, N)`` between text tokens ``(R, D)`` and vision tokens ``(N, D)``."""
    return F.normalize(text.float(), dim=-1) @ F.normalize(vision.float(), dim=-1).transpose(-1, -2)


def vlad_loss(
    student_text: torch.Tensor,
    student_vision: torch.Tensor,
    teacher_text: torch.Tensor,
    teacher_vision: torch.Tensor,
    beta: float = 1.0,
) -> torch.Tensor:
    """Vision-language affinity distillation: ``SmoothL1(A_s, A_t)`` averaged over the matrix entries.

    Args:
        student_text ``(R, Ds)`` and teacher_text ``(R, Dt)``: index-aligned answer hidden states.
        student_vision ``(N, Ds)`` and teacher_vision ``(N, Dt)``: matched vision tokens, row n paired.
        beta: SmoothL1 threshold (PyTorch's default 1).
    """
    if student_text.shape[0] == 0 or student_vision.shape[0] == 0:
        return (student_text.float().sum() + student_vision.float().sum()) * 0.0
    return F.smooth_l1_loss(affinity(student_text, student_vision), affinity(teacher_text, teacher_vision), beta=beta)
