"""The widths a distillation method builds its modules from, as a model family reports them.

A neutral module: model families (:mod:`evl_kd_trainer.models`) produce :class:`ModelDims` and distillation
methods (:mod:`evl_kd_trainer.methods`) consume them, so neither package imports the other for it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelDims:
    """Widths a method needs to build its modules.

    Attributes:
        hidden_size: width of the language model's hidden states (the captured layer).
        visual_width: width of the visual tokens fed to the language model (usually ``hidden_size``).
        vocab_size: size of the LM head's output.
    """

    hidden_size: int
    visual_width: int
    vocab_size: int


__all__ = ["ModelDims"]
