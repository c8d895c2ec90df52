"""What the cache stores for a run: exactly the teacher features its ``kd_method`` reads, and nothing else.

:func:`features_for` translates the method's own :class:`~evl_kd_trainer.methods.FeatureRequest` (which layer, which
teacher positions, visual tokens, LM head, input embeddings) into the :class:`TeacherFeatureSet` a cache holds, so a
new method is cached correctly without any edit here. Logit methods get their teacher logits recomputed exactly
from the stored final-layer states and LM head; methods that read only the teacher's logits (no LM head of their
own, no embeddings: ULD, MultiLevelOT) may store top-k log-probabilities instead, an approximation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from evl_kd_trainer.methods.request import (  # noqa: F401  (re-exported for the cache's modules)
    POSITION_SETS,
    POSITIONS_ATTENTION,
    POSITIONS_IMAGE_OR_RESPONSE,
    POSITIONS_NEXT_TOKEN,
    POSITIONS_NONE,
    POSITIONS_RESPONSE,
)

# Which position sets a stored set contains.
_COVERS = {
    POSITIONS_NONE: {POSITIONS_NONE},
    POSITIONS_ATTENTION: set(POSITION_SETS),
    POSITIONS_RESPONSE: {POSITIONS_NONE, POSITIONS_RESPONSE},
    POSITIONS_NEXT_TOKEN: {POSITIONS_NONE, POSITIONS_NEXT_TOKEN},
    POSITIONS_IMAGE_OR_RESPONSE: {POSITIONS_NONE, POSITIONS_RESPONSE, POSITIONS_IMAGE_OR_RESPONSE},
}


@dataclass(frozen=True)
class TeacherFeatureSet:
    """The teacher features a cache holds.

    Attributes:
        hidden_layer: the teacher layer whose states are stored (``teacher_hidden_layer``; -1 is the final norm).
        hidden_positions: which positions' states are stored (one of :data:`POSITION_SETS`).
        visual: whether the LM-input visual tokens are stored.
        lm_head: whether the teacher's LM head is stored (once), so logits are recomputed exactly.
        embed_tokens: whether the teacher's input embedding table is stored (once).
        logits_topk: ``k > 0`` stores the top-k log-probabilities at the next-token answer positions.
    """

    hidden_layer: int = -1
    hidden_positions: str = POSITIONS_ATTENTION
    visual: bool = False
    lm_head: bool = False
    embed_tokens: bool = False
    logits_topk: int = 0

    def __post_init__(self) -> None:
        if self.hidden_positions not in POSITION_SETS:
            raise ValueError(f"hidden_positions must be one of {POSITION_SETS}, got {self.hidden_positions!r}.")
        if self.logits_topk < 0:
            raise ValueError(f"logits_topk must be >= 0, got {self.logits_topk}.")

    @property
    def stores_hidden(self) -> bool:
        return self.hidden_positions != POSITIONS_NONE

    def missing_for(self, required: TeacherFeatureSet) -> str | None:
        """Why a cache holding ``self`` cannot serve a run that reads ``required`` (``None``: it can).

        A superset serves: every position covers any position set, image-or-response covers response; the top-k
        log-probs serve a logits-only method (ULD, MultiLevelOT) in place of its hidden states and LM head.
        """
        logits_only = (
            required.hidden_positions == POSITIONS_NEXT_TOKEN and required.lm_head and not required.embed_tokens
        )
        if logits_only and self.logits_topk and not required.logits_topk:
            return None if self.hidden_layer == required.hidden_layer else self._layer_reason(required)
        if required.stores_hidden:
            if self.hidden_layer != required.hidden_layer:
                return self._layer_reason(required)
            if required.hidden_positions not in _COVERS[self.hidden_positions]:
                return (
                    f"the cache holds teacher states at {self.hidden_positions!r} positions, the run reads them at "
                    f"{required.hidden_positions!r} positions (kd_token_scope / kd_method)"
                )
        for name in ("visual", "lm_head", "embed_tokens"):
            if getattr(required, name) and not getattr(self, name):
                return f"the run reads the teacher's {name.replace('_', ' ')}, which the cache does not hold"
        if required.logits_topk > self.logits_topk and not (self.lm_head and self.stores_hidden):
            return f"the run reads top-{required.logits_topk} log-probs, the cache holds top-{self.logits_topk}"
        return None

    def _layer_reason(self, required: TeacherFeatureSet) -> str:
        return f"the cache holds teacher layer {self.hidden_layer}, the run reads layer {required.hidden_layer}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TeacherFeatureSet:
        return cls(**values)


def features_for(method_name: str, args: Any, logits_topk: int = 0) -> TeacherFeatureSet:
    """The teacher features that ``kd_method=method_name`` reads under ``args`` (an ``EVLDistillConfig``), from the
    method's own request.

    Raises:
        ValueError: for a method that reads no teacher (or carries no weight under ``args``: there is nothing to
            cache), or ``logits_topk`` with a method that needs more than the teacher's logits.
    """
    from evl_kd_trainer.methods import get_method

    method_cls = get_method(method_name)
    request = method_cls.request(args)
    if not request.teacher:
        raise ValueError(f"kd_method={method_name!r} reads no teacher: there is nothing to cache.")
    if not method_cls.active_for(args):
        raise ValueError(
            f"kd_method={method_name!r} carries no weight under these settings (alpha or its own weights are 0): the "
            "run is plain SFT and reads no teacher, so there is nothing to cache."
        )
    logits_only = (
        request.teacher_logits
        and not (request.lm_heads or request.embeddings)
        and request.teacher_positions == POSITIONS_NEXT_TOKEN
    )
    if logits_topk and not logits_only:
        raise ValueError(
            f"`logits_topk` replaces the teacher's logits, but kd_method={method_name!r} reads more than its logits "
            "(its LM head or embeddings; only methods such as uld and multilevel_ot can use it): leave logits_topk at 0."
        )
    if logits_topk:
        return TeacherFeatureSet(
            hidden_layer=request.teacher_layer, hidden_positions=POSITIONS_NONE, logits_topk=int(logits_topk)
        )
    return TeacherFeatureSet(
        hidden_layer=request.teacher_layer,
        hidden_positions=request.teacher_positions,
        visual=request.visual,
        lm_head=request.lm_heads or request.teacher_logits,
        embed_tokens=request.embeddings,
    )
