"""Trainable modules that bring teacher features into the student's space (paper sections 2.1 and 2.2).

Both are plain ``nn.Linear`` compositions: ``nn.MultiheadAttention`` uses its ``out_proj`` weight
functionally, which DeepSpeed ZeRO-3 never gathers (``mat2 must be a matrix``), so attention is built
from linear layers and ``F.scaled_dot_product_attention``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from evl_kd_trainer.losses._checks import check_mask, check_rank, check_same_dims, shape_str


class VisualProjector(nn.Module):
    """Linear map ``D_t -> D_s`` of the teacher's visual tokens before ``L_ot`` (section 2.1:
    "teacher tokens linearly projected to the student's dimension")."""

    def __init__(self, teacher_dim: int, student_dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(teacher_dim, student_dim, bias=True)

    def forward(self, teacher_tokens: torch.Tensor) -> torch.Tensor:
        """(..., D_t) -> (..., D_s), computed in the weights' dtype."""
        return self.proj(teacher_tokens.to(self.proj.weight.dtype))


class CrossAttentionAligner(nn.Module):
    """Multi-head cross-attention of section 2.2: student states query the teacher's states.

    ``head_i = softmax((H_s W_i^Q)(H_t W_i^K)^T / sqrt(d_k)) (H_t W_i^V)`` with ``d_k = D_s / h`` and
    ``H_t_hat = Concat(head_1..head_h) W^O``. The per-head ``W_i^{Q,K,V}`` are the column blocks of
    ``q_proj``/``k_proj``/``v_proj`` (D_t -> D_s for keys and values, so the output has the student's
    width and length); ``o_proj`` is ``W^O``. All four carry a bias.
    """

    def __init__(self, student_dim: int, teacher_dim: int, num_heads: int = 8) -> None:
        super().__init__()
        if num_heads <= 0 or student_dim % num_heads != 0:
            raise ValueError(
                f"student_dim ({student_dim}) must be divisible by num_heads ({num_heads}), a positive integer."
            )
        self.student_dim = student_dim
        self.teacher_dim = teacher_dim
        self.num_heads = num_heads
        self.head_dim = student_dim // num_heads
        self.q_proj = nn.Linear(student_dim, student_dim, bias=True)
        self.k_proj = nn.Linear(teacher_dim, student_dim, bias=True)
        self.v_proj = nn.Linear(teacher_dim, student_dim, bias=True)
        self.o_proj = nn.Linear(student_dim, student_dim, bias=True)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        student_hidden: torch.Tensor,
        teacher_hidden: torch.Tensor,
        teacher_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Aligned teacher ``H_t_hat`` (B, L_s, D_s) in the weights' dtype.

        Args:
            student_hidden: (B, L_s, D_s) queries ``H_s``.
            teacher_hidden: (B, L_t, D_t) keys and values ``H_t``.
            teacher_mask: (B, L_t), True (or 1) on real teacher tokens; padded ones get no attention.
                A sample with no real teacher token gets an all-zero output (no NaN) and no gradient.
        """
        check_rank("student_hidden", student_hidden, 3, "(B, L_s, D_s)")
        check_rank("teacher_hidden", teacher_hidden, 3, "(B, L_t, D_t)")
        check_same_dims(("student_hidden", "teacher_hidden"), (student_hidden, teacher_hidden), [0], "batch size")
        if student_hidden.shape[-1] != self.student_dim or teacher_hidden.shape[-1] != self.teacher_dim:
            raise ValueError(
                f"Expected widths D_s={self.student_dim}, D_t={self.teacher_dim}; got student_hidden "
                f"{shape_str(student_hidden)}, teacher_hidden {shape_str(teacher_hidden)}."
            )
        mask = check_mask("teacher_mask", teacher_mask, tuple(teacher_hidden.shape[:2]))

        dtype = self.q_proj.weight.dtype
        teacher_hidden = teacher_hidden.to(dtype)
        if mask is not None:
            # Padded rows get attention weight 0, but 0 * NaN is NaN: whatever they hold must not reach the output.
            teacher_hidden = teacher_hidden.masked_fill(~mask.to(teacher_hidden.device)[..., None], 0.0)
        q = self._split_heads(self.q_proj(student_hidden.to(dtype)))
        k = self._split_heads(self.k_proj(teacher_hidden))
        v = self._split_heads(self.v_proj(teacher_hidden))

        attn_mask = None
        has_keys = None
        if mask is not None:
            mask = mask.to(q.device)
            has_keys = mask.any(-1)
            # A fully masked row makes softmax 0/0 = NaN: let such samples attend everywhere and zero
            # their output below, so they stay finite and contribute nothing.
            safe = mask | ~has_keys[:, None]
            attn_mask = safe[:, None, None, :]  # (B, 1, 1, L_t), broadcast over heads and queries
        # Default scale is 1/sqrt(head_dim) = 1/sqrt(D_s / h), the d_k of section 2.2.
        heads = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        batch, _, length, _ = heads.shape
        out = self.o_proj(heads.transpose(1, 2).reshape(batch, length, self.student_dim))
        if has_keys is not None and not bool(has_keys.all()):
            out = torch.where(has_keys[:, None, None], out, torch.zeros_like(out))
        return out
