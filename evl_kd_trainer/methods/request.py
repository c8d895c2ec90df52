"""`FeatureRequest`: what a distillation method reads, so the trainer (or the teacher cache) builds nothing else."""

from __future__ import annotations

from dataclasses import dataclass


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
    """

    teacher: bool = True
    student_layer: int = -1
    teacher_layer: int = -1
    visual: bool = False
    student_logits: bool = False
    teacher_logits: bool = False
    lm_heads: bool = False
    embeddings: bool = False

    @property
    def reads_final_layer(self) -> bool:
        """Logits and LM-head decoding come from the final layer: such a method needs both layers at `-1`."""
        return self.student_logits or self.teacher_logits or self.lm_heads
