"""The hidden-state MSE baseline's own fields of ``EVLDistillConfig``."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class HiddenMSEConfig:
    r"""
    > Parameters of the hidden-state MSE baseline (`kd_method="hidden_mse"`, FitNets): `(1 - alpha) * L_CE + alpha *
    hidden_mse_lambda * L_mse`

    hidden_mse_lambda (`float`, *optional*, defaults to `1.0`):
        Weight of the mean squared error between the student's hidden states and the linearly projected teacher
        states at the index-aligned answer positions (layers: `student_hidden_layer`, `teacher_hidden_layer`).
    """

    hidden_mse_lambda: float = field(
        default=1.0, metadata={"help": "hidden_mse: weight of the MSE to the projected teacher states."}
    )

    def check(self) -> None:
        if self.hidden_mse_lambda < 0:
            raise ValueError(f"`hidden_mse_lambda` must be >= 0, got {self.hidden_mse_lambda}.")


CONFIG = HiddenMSEConfig
