"""Built-in model families, one file each (``qwen_vl``, ``llava``, ``llava_flat``, ``smolvlm``).

Each module defines a :class:`~evl_kd_trainer.models.family.ModelFamily` and registers it; the registry
(:mod:`evl_kd_trainer.models.registry`) imports every module of this package on its first lookup, so a new family
is one new file here. See ``docs/extending.md`` ("Adding a model family").
"""
