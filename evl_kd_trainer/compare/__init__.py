"""Seeded comparisons of distillation methods (``evl-kd compare``): every method from the same starting student
for each seed, scored on a held-out split, summarised with bootstrap intervals and paired differences against a
control. :mod:`evl_kd_trainer.compare.stats` holds the statistics alone (numpy only)."""
