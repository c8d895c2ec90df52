"""`CachedTeacherBatch`: a batch of cached teacher features, padded to the shapes the live teacher path produces.

It stands in for both things the trainer takes from a live teacher: the teacher view's tensors
(:meth:`CachedTeacherBatch.teacher_inputs`, what the collator's ``teacher_*`` keys hold) and the captured features
(``.hidden`` and :meth:`CachedTeacherBatch.padded_visual`, the interface of
:class:`~evl_kd_trainer.models.capture.CapturedFeatures`), so ``_build_features`` can read either.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from evl_kd_trainer.methods.base import logits_at, next_token_positions


@dataclass
class CachedTeacherBatch:
    """Cached teacher features of ``B`` records, right-padded to the longest (``L`` tokens, ``V`` visual rows).

    Attributes:
        record_ids: the records, in row order.
        input_ids / attention_mask: ``(B, L)`` int64, as the collator's ``teacher_input_ids`` /
            ``teacher_attention_mask`` (padding: the teacher's pad id / 0).
        response_mask: ``(B, L)`` bool, the collator's ``teacher_response_mask``.
        image_mask: ``(B, L)`` bool, the image-token positions (``adapter.image_token_mask(input_ids)``).
        hidden: ``(B, L, D)`` the teacher's states of the cached layer at the stored positions, zero elsewhere
            (``None`` when a PCA cache is read as coefficients only).
        hidden_mask: ``(B, L)`` bool, the stored positions.
        hidden_coeffs: ``(B, L, R)`` PCA coefficients (PCA caches read with coefficients), zero elsewhere.
        visual / visual_mask: ``(B, V, D)`` LM-input visual tokens (or their centroids) and their ``(B, V)`` mask.
        visual_weights: ``(B, V)`` the centroids' weights (the OT marginal of the teacher side; each sample's sum
            to 1), ``None`` unless the cache reduced the visual tokens.
        visual_coeffs: ``(B, V, R)`` PCA coefficients of the visual rows (PCA caches read with coefficients).
        topk_logprobs / topk_indices: ``(B, R, K)`` top-k teacher log-probs and their token ids at the positions
            predicting an answer token, left-packed, with ``topk_mask`` ``(B, R)`` (caches built with ``logits_topk``).
    """

    record_ids: list[str]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    image_mask: torch.Tensor
    hidden: torch.Tensor | None
    hidden_mask: torch.Tensor
    hidden_coeffs: torch.Tensor | None = None
    visual: torch.Tensor | None = None
    visual_mask: torch.Tensor | None = None
    visual_weights: torch.Tensor | None = None
    visual_coeffs: torch.Tensor | None = None
    topk_logprobs: torch.Tensor | None = None
    topk_indices: torch.Tensor | None = None
    topk_mask: torch.Tensor | None = None

    def teacher_inputs(self) -> dict[str, torch.Tensor]:
        """The teacher-view tensors under the names the trainer strips ``teacher_`` to."""
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "response_mask": self.response_mask}

    def padded_visual(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(visual (B, V, D), mask (B, V))``, as ``CapturedFeatures.padded_visual`` returns them."""
        if self.visual is None or self.visual_mask is None:
            raise ValueError("This cache holds no visual tokens (the kd_method it was built for does not read them).")
        return self.visual, self.visual_mask

    def logits(
        self, lm_head: nn.Module | None = None, vocab_size: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's logits at the positions predicting an answer token, ``(B, R, V)`` with a ``(B, R)`` mask,
        as :func:`~evl_kd_trainer.methods.logits_at` gives them live.

        From the cached final-layer states through ``lm_head`` (exact); for a top-k cache (``lm_head`` not needed,
        ``vocab_size`` is), the stored top-k log-probs with the remaining mass spread evenly over the other tokens,
        so softmax gives the top-k probabilities exactly and a flat tail.
        """
        positions = next_token_positions(self.response_mask) & self.attention_mask.bool()
        if self.topk_logprobs is None:
            if lm_head is None or self.hidden is None:
                raise ValueError("Logits need the cached final-layer states and the teacher's LM head.")
            return logits_at(lm_head, self.hidden, positions)
        if vocab_size is None:
            raise ValueError("Logits from top-k log-probs need the teacher's vocab_size.")
        values, indices, mask = self.topk_logprobs.float(), self.topk_indices.long(), self.topk_mask
        k = values.shape[-1]
        rest = (1.0 - values.exp().sum(-1)).clamp_min(1e-12) / max(vocab_size - k, 1)
        dense = rest.log()[..., None].expand(*values.shape[:-1], vocab_size).clone()
        dense.scatter_(-1, indices, values)
        return torch.where(mask[..., None], dense, torch.zeros((), dtype=dense.dtype, device=dense.device)), mask

    def to(self, device: torch.device | str) -> CachedTeacherBatch:
        """A copy with every tensor on ``device``."""
        values = {
            name: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
            for name, value in self.__dict__.items()
        }
        return CachedTeacherBatch(**values)
