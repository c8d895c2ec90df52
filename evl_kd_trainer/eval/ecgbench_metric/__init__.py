"""The ``evaluate`` metric module of ECG-Bench (``ecgbench_metric.py``); a package so that it ships with the wheel.

Load it offline with ``evaluate.load(evl_kd_trainer.eval.ECGBENCH_METRIC_PATH)``.
"""
