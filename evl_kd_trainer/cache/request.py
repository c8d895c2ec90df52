"""What the cache stores for a run: exactly the teacher features its ``kd_method`` reads, and nothing else.

One function, :func:`features_for`, decides it from the method class's flags (``needs_teacher``,
``needs_teacher_logits``, ``needs_visual``) and the few settings that change what a method reads (EVL's term
weights and ``kd_token_scope``); when methods declare a ``FeatureRequest`` themselves, this is the one place to
replace. A method without a rule here gets a conservative superset (every position, the visual tokens, the LM head
and the input embeddings), which is lossless for anything computed from :class:`DistillFeatures`.

Which teacher positions each built-in method reads (its ``forward``):

* ``evl``: the hidden states of ``teacher_hidden_layer`` under the aligner's key mask, i.e. every real token
  (``kd_token_scope="all"``) or the answer tokens (``"response"``), when ``lambda_mhca`` or ``lambda_rel`` is on;
  the LM-input visual tokens when ``lambda_ot`` is on.
* ``uld``, ``multilevel_ot``: the teacher's logits at the positions predicting an answer token
  (``next_token_positions``), computed from the final layer there: those hidden states plus the LM head (or, with
  ``logits_topk``, only the top-k log-probabilities there, an approximation).
* ``dskd``: the same positions' final-layer states and logits, the LM head (applied to projected student states)
  and the input embeddings of the teacher's tokens.
* ``emkd``: the final-layer states at the image-token positions (its "vision tokens", decoded by the LM head) and at
  the answer tokens (its affinity term), plus the LM head.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# Position sets of the stored hidden states, per record (a (L,) mask over the teacher's tokens).
POSITIONS_NONE = "none"
POSITIONS_ATTENTION = "attention"  # every real (non-padding) token
POSITIONS_RESPONSE = "response"  # the answer tokens (response_mask)
POSITIONS_NEXT_TOKEN = "next_token"  # the positions predicting an answer token (next_token_positions)
POSITIONS_IMAGE_OR_RESPONSE = "image_or_response"  # image-token positions and answer tokens
POSITION_SETS = (
    POSITIONS_NONE,
    POSITIONS_ATTENTION,
    POSITIONS_RESPONSE,
    POSITIONS_NEXT_TOKEN,
    POSITIONS_IMAGE_OR_RESPONSE,
)
# Which position sets a stored set contains.
_COVERS = {
    POSITIONS_NONE: {POSITIONS_NONE},
    POSITIONS_ATTENTION: set(POSITION_SETS),
    POSITIONS_RESPONSE: {POSITIONS_NONE, POSITIONS_RESPONSE},
    POSITIONS_NEXT_TOKEN: {POSITIONS_NONE, POSITIONS_NEXT_TOKEN},
    POSITIONS_IMAGE_OR_RESPONSE: {POSITIONS_NONE, POSITIONS_RESPONSE, POSITIONS_IMAGE_OR_RESPONSE},
}
# Methods that read only the teacher's logits at the next-token answer positions: top-k log-probs can replace them.
LOGITS_ONLY_METHODS = ("uld", "multilevel_ot")


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


def _flag(method_cls: type, name: str, default: bool = True) -> bool:
    """A ``needs_*`` class flag; one computed per instance (a property) counts as ``default`` (read it)."""
    value = getattr(method_cls, name, False)
    return value if isinstance(value, bool) else default


def features_for(method_name: str, args: Any, logits_topk: int = 0) -> TeacherFeatureSet:
    """The teacher features that ``kd_method=method_name`` reads under ``args`` (an ``EVLDistillConfig``).

    Raises:
        ValueError: for a method that reads no teacher (or carries no weight under ``args``: there is nothing to
            cache), or ``logits_topk`` with a method that needs more than the teacher's logits.
    """
    from evl_kd_trainer.methods import get_method, load_builtin_methods

    load_builtin_methods()
    method_cls = get_method(method_name)
    if not _flag(method_cls, "needs_teacher", default=True):
        raise ValueError(f"kd_method={method_name!r} reads no teacher: there is nothing to cache.")
    if not method_cls.active_for(args):
        raise ValueError(
            f"kd_method={method_name!r} carries no weight under these settings (alpha or its own weights are 0): the "
            "run is plain SFT and reads no teacher, so there is nothing to cache."
        )
    layer = int(getattr(args, "teacher_hidden_layer", -1))
    if logits_topk and method_name not in LOGITS_ONLY_METHODS:
        raise ValueError(
            f"`logits_topk` replaces the teacher's logits, but kd_method={method_name!r} reads more than its logits "
            f"(only {', '.join(LOGITS_ONLY_METHODS)} can use it): leave logits_topk at 0."
        )
    if method_name == "evl":
        hidden_terms = float(args.lambda_mhca) > 0 or float(args.lambda_rel) > 0
        scope = POSITIONS_RESPONSE if args.kd_token_scope == "response" else POSITIONS_ATTENTION
        return TeacherFeatureSet(
            hidden_layer=layer,
            hidden_positions=scope if hidden_terms else POSITIONS_NONE,
            visual=float(args.lambda_ot) > 0,  # the condition under which EVLMethod builds its visual projector
        )
    if method_name in LOGITS_ONLY_METHODS:
        if logits_topk:
            return TeacherFeatureSet(hidden_layer=layer, hidden_positions=POSITIONS_NONE, logits_topk=int(logits_topk))
        return TeacherFeatureSet(hidden_layer=layer, hidden_positions=POSITIONS_NEXT_TOKEN, lm_head=True)
    if method_name == "dskd":
        return TeacherFeatureSet(
            hidden_layer=layer, hidden_positions=POSITIONS_NEXT_TOKEN, lm_head=True, embed_tokens=True
        )
    if method_name == "emkd":
        return TeacherFeatureSet(hidden_layer=layer, hidden_positions=POSITIONS_IMAGE_OR_RESPONSE, lm_head=True)
    # A method this module has no rule for: everything it could read from DistillFeatures (the trainer hands every
    # method both teacher modules, whatever its flags say: EM-KD, for one, decodes with the head without any flag).
    return TeacherFeatureSet(
        hidden_layer=layer,
        hidden_positions=POSITIONS_ATTENTION,
        visual=_flag(method_cls, "needs_visual", default=True),
        lm_head=True,
        embed_tokens=True,
    )
