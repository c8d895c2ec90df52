"""`FeatureRequest`: what a distillation method reads, so the trainer (or the teacher cache) builds nothing else."""

from __future__ import annotations

from dataclasses import dataclass

# Which of the teacher's positions a method reads its hidden states at (the teacher cache stores only those).
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


@dataclass(frozen=True)
class FeatureRequest:
    """The features one method reads under one config, decided before any model is loaded.

    Attributes:
        teacher: the method reads the teacher at all (`sft` does not: no teacher is loaded or run).
        student_layer: student layer whose hidden states are captured (`-1`: the final-norm output, `k >= 0`: the
            output of decoder layer `k`).
        teacher_layer: same for the teacher.
        visual: the LM-input visual tokens of both models (padded per sample, see
            :class:`~evl_kd_trainer.methods.features.DistillFeatures`).
        student_logits: the student's LM head applied at :meth:`DistillationMethod.logit_positions`.
        teacher_logits: same for the teacher (under ``no_grad``).
        lm_heads: the LM-head modules themselves (a method that decodes other states through them: DSKD, EM-KD).
        embeddings: the input-embedding modules (DSKD's index embeddings).
        teacher_positions: where the method reads the teacher's hidden states (one of :data:`POSITION_SETS`; the
            default, every real token, is always enough). The trainer captures the whole sequence either way; a
            teacher cache stores these positions only.
    """

    teacher: bool = True
    student_layer: int = -1
    teacher_layer: int = -1
    visual: bool = False
    student_logits: bool = False
    teacher_logits: bool = False
    lm_heads: bool = False
    embeddings: bool = False
    teacher_positions: str = POSITIONS_ATTENTION

    def __post_init__(self) -> None:
        if self.teacher_positions not in POSITION_SETS:
            raise ValueError(f"teacher_positions must be one of {POSITION_SETS}, got {self.teacher_positions!r}.")

    @property
    def reads_final_layer(self) -> bool:
        """Logits and LM-head decoding come from the final layer: such a method needs both layers at `-1`."""
        return self.student_logits or self.teacher_logits or self.lm_heads
