"""One collated teacher batch -> the teacher's forward -> per-record features, exactly what the cache stores.

The forward is the trainer's own (:func:`~evl_kd_trainer.models.capture.teacher_features` on the batch's
``teacher_*`` tensors), so the cached states are the states a live run computes. Each record then keeps its real
tokens (the collator right-pads), its hidden states at the positions the method reads, its visual tokens and, with
``logits_topk``, the top-k log-probabilities at the positions predicting an answer token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from evl_kd_trainer.cache.centroids import weighted_centroids
from evl_kd_trainer.cache.request import (
    POSITIONS_ATTENTION,
    POSITIONS_IMAGE_OR_RESPONSE,
    POSITIONS_NEXT_TOKEN,
    POSITIONS_NONE,
    POSITIONS_RESPONSE,
    TeacherFeatureSet,
)
from evl_kd_trainer.methods.base import logits_at, next_token_positions
from evl_kd_trainer.models.base import ModelAdapter
from evl_kd_trainer.models.capture import CapturedFeatures, teacher_features

TEACHER_PREFIX = "teacher_"


@dataclass
class RecordFeatures:
    """One record's teacher features; token tensors are ``(L,)`` over its real tokens, on the CPU."""

    record_id: str
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    response_mask: torch.Tensor
    hidden_mask: torch.Tensor
    hidden: torch.Tensor | None = None  # (hidden_mask.sum(), D)
    visual: torch.Tensor | None = None  # (V, D): tokens, or centroids when reduced
    visual_weights: torch.Tensor | None = None  # (V,) OT weights of the centroids
    topk_logprobs: torch.Tensor | None = None  # (R, K) at the next-token answer positions
    topk_indices: torch.Tensor | None = None  # (R, K)


def position_mask(
    kind: str, attention_mask: torch.Tensor, response_mask: torch.Tensor, image_mask: torch.Tensor
) -> torch.Tensor:
    """The ``(B, L)`` positions whose hidden states a position set keeps."""
    attention = attention_mask.bool()
    if kind == POSITIONS_NONE:
        return torch.zeros_like(attention)
    if kind == POSITIONS_ATTENTION:
        return attention
    if kind == POSITIONS_RESPONSE:
        return response_mask.bool() & attention
    if kind == POSITIONS_NEXT_TOKEN:
        return next_token_positions(response_mask) & attention
    if kind == POSITIONS_IMAGE_OR_RESPONSE:
        return (image_mask.bool() | response_mask.bool()) & attention
    raise ValueError(f"unknown position set {kind!r}")


def teacher_inputs_of(batch: dict[str, Any], device: torch.device | str) -> dict[str, Any]:
    """The batch's ``teacher_*`` tensors without the prefix, on ``device`` (what the trainer hands the teacher)."""
    return {
        key[len(TEACHER_PREFIX) :]: value.to(device)
        for key, value in batch.items()
        if key.startswith(TEACHER_PREFIX) and isinstance(value, torch.Tensor)
    }


def run_teacher(
    teacher: nn.Module, adapter: ModelAdapter, inputs: dict[str, Any], features: TeacherFeatureSet
) -> CapturedFeatures:
    """The trainer's teacher forward (no LM head, no gradients) capturing what ``features`` needs."""
    with torch.no_grad():
        return teacher_features(teacher, adapter, inputs, hidden_layer=features.hidden_layer, visual=features.visual)


def split_records(
    inputs: dict[str, Any],
    store: CapturedFeatures,
    record_ids: list[str],
    features: TeacherFeatureSet,
    adapter: ModelAdapter,
    lm_head: nn.Module | None = None,
    visual_centroids: int = 0,
    kmeans_iterations: int = 25,
) -> list[RecordFeatures]:
    """Cut a forward's features into one :class:`RecordFeatures` per row of the batch."""
    input_ids, attention = inputs["input_ids"], inputs["attention_mask"].bool()
    response = inputs["response_mask"].bool()
    image_mask = adapter.image_token_mask(input_ids)
    keep = position_mask(features.hidden_positions, attention, response, image_mask)
    visual = visual_mask = None
    if features.visual:
        visual, visual_mask = store.padded_visual()
    topk_values = topk_indices = topk_mask = None
    if features.logits_topk:
        if lm_head is None:
            raise ValueError("top-k log-probs need the teacher's LM head.")
        with torch.no_grad():
            logits, topk_mask = logits_at(lm_head, store.hidden, next_token_positions(response) & attention)
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            k = min(features.logits_topk, logprobs.shape[-1])
            topk_values, topk_indices = logprobs.topk(k, dim=-1)
    records = []
    for b, rid in enumerate(record_ids):
        length = int(attention[b].sum())
        if not bool(attention[b, :length].all()):
            raise ValueError(f"record {rid!r}: the teacher view is not right-padded (attention_mask has holes).")
        record = RecordFeatures(
            record_id=rid,
            input_ids=input_ids[b, :length].cpu(),
            attention_mask=attention[b, :length].cpu(),
            response_mask=response[b, :length].cpu(),
            hidden_mask=keep[b, :length].cpu(),
        )
        if features.stores_hidden:
            record.hidden = store.hidden[b, :length][keep[b, :length]]
        if visual is not None:
            tokens = visual[b][visual_mask[b]]
            if visual_centroids:
                record.visual, record.visual_weights = weighted_centroids(tokens, visual_centroids, kmeans_iterations)
            else:
                record.visual = tokens
        if topk_values is not None:
            rows = topk_mask[b]
            record.topk_logprobs = topk_values[b][rows].cpu()
            record.topk_indices = topk_indices[b][rows].to(torch.int32).cpu()
        records.append(record)
    return records
