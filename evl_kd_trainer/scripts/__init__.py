"""The code behind `examples/*.py` and the `evl-kd sft|distill|evaluate` console commands."""
