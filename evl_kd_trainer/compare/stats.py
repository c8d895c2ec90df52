"""Statistics of a seeded method comparison: per-method means over seeds with bootstrap intervals, and each
method's paired difference against a control, from per-question results. Pure numpy, no model, no file.

Every metric the evaluator reports is a function of *sums over questions* of small per-question count vectors:

* accuracy: ``[correct, 1]`` per question -> ``100 * sum(correct) / sum(1)``;
* multi-label splits: per class ``[tp, fp, fn, tn]`` per question -> macro AUC (ROC AUC of 0/1 predictions is
  ``(TPR + TNR) / 2``, left out for a class whose gold column has one value), macro F1 (left out for a class
  with no gold and no predicted positive) and Hamming loss, exactly as :mod:`evl_kd_trainer.eval.metrics`
  scores them without ``reference_compat``.

So a bootstrap resample of questions is a vector of multiplicities (how often each question was drawn), and its
metric is the statistic of ``multiplicities @ features``: one matrix product per method and seed, not a loop.

The bootstrap resamples **questions and seeds**: each replicate draws ``n`` questions with replacement (the same
draw for every method and seed, which pairs the methods question by question) and ``S`` seeds with replacement
(the same for every method, which pairs a method's seed-``s`` run with the control's seed-``s`` run). A method's
replicate value is the mean over the drawn seeds of its metric on the drawn questions; its difference from the
control is taken replicate by replicate. Intervals are percentile intervals of the replicates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Statistic = Callable[[np.ndarray], np.ndarray]
# A difference within this many points is a tie, not a gain: replicates whose means are mathematically equal can
# come out a few ulps apart (100 * 5/9 + 100 * 4/9 against 100 * 6/9 + 100 * 3/9).
TIE_TOLERANCE = 1e-9
# Replicates per chunk: bounds the multiplicity matrix (chunk x questions) and the sums in memory.
_CHUNK = 1024


# --- per-question features and the metrics computed from their sums ---------------------------------------------
def accuracy_features(correct: np.ndarray) -> np.ndarray:
    """``(..., n)`` booleans (question answered right) -> ``(..., n, 2)`` features ``[correct, 1]``."""
    correct = np.asarray(correct, dtype=np.float64)
    return np.stack([correct, np.ones_like(correct)], axis=-1)


def accuracy_statistic(sums: np.ndarray) -> np.ndarray:
    """Accuracy x100 from summed ``[correct, 1]`` features ``(..., 2)``."""
    return 100.0 * sums[..., 0] / sums[..., 1]


def multilabel_features(gold: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """``(..., n, C)`` gold and predicted label indicators -> ``(..., n, C, 4)`` features ``[tp, fp, fn, tn]``."""
    gold = np.asarray(gold, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    if gold.shape != pred.shape:
        raise ValueError(f"gold {gold.shape} and predicted {pred.shape} label indicators differ in shape")
    return np.stack([gold & pred, ~gold & pred, gold & ~pred, ~gold & ~pred], axis=-1).astype(np.float64)


def _nanmean_or_nan(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Mean over the last axis of the ``valid`` entries; NaN where none is valid (no warning)."""
    count = valid.sum(axis=-1)
    total = np.where(valid, values, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def macro_auc_statistic(sums: np.ndarray) -> np.ndarray:
    """Macro AUC x100 from summed ``[tp, fp, fn, tn]`` ``(..., C, 4)``: classes with one gold value left out."""
    tp, fp, fn, tn = np.moveaxis(sums, -1, 0)
    positives, negatives = tp + fn, tn + fp
    valid = (positives > 0) & (negatives > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = 0.5 * (tp / positives + tn / negatives)
    return 100.0 * _nanmean_or_nan(auc, valid)


def macro_f1_statistic(sums: np.ndarray) -> np.ndarray:
    """Macro F1 x100 from summed ``[tp, fp, fn, tn]``: classes with no gold and no predicted positive left out."""
    tp, fp, fn, _ = np.moveaxis(sums, -1, 0)
    denominator = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * tp / denominator
    return 100.0 * _nanmean_or_nan(f1, denominator > 0)


def hamming_statistic(sums: np.ndarray) -> np.ndarray:
    """Hamming loss x100 (lower is better) from summed ``[tp, fp, fn, tn]`` ``(..., C, 4)``."""
    errors = (sums[..., 1] + sums[..., 2]).sum(axis=-1)
    cells = sums.sum(axis=(-1, -2))
    return 100.0 * errors / cells


#: The evaluator's metric keys -> the statistic of their summed features.
STATISTICS: dict[str, Statistic] = {
    "accuracy": accuracy_statistic,
    "auc": macro_auc_statistic,
    "f1": macro_f1_statistic,
    "hamming_loss": hamming_statistic,
}
#: Metrics where a smaller value is better (a positive difference against the control is then a loss).
LOWER_IS_BETTER = frozenset({"hamming_loss"})


# --- the bootstrap --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Resamples:
    """Bootstrap replicates as multiplicities: ``questions[b, q]`` is how often question ``q`` was drawn in
    replicate ``b`` (each row sums to the number of questions), ``seeds[b, s]`` likewise for seeds."""

    questions: np.ndarray
    seeds: np.ndarray

    def __post_init__(self) -> None:
        if self.questions.ndim != 2 or self.seeds.ndim != 2 or len(self.questions) != len(self.seeds):
            raise ValueError(
                f"question multiplicities {self.questions.shape} and seed multiplicities {self.seeds.shape} must be "
                "(replicates, questions) and (replicates, seeds)"
            )

    @property
    def n_replicates(self) -> int:
        return len(self.questions)


def draw_resamples(n_questions: int, n_seeds: int, n_replicates: int, rng: np.random.Generator) -> Resamples:
    """Draw ``n_replicates`` resamples of ``n_questions`` questions and ``n_seeds`` seeds, with replacement."""
    if n_questions < 1 or n_seeds < 1 or n_replicates < 1:
        raise ValueError(
            f"need at least one question, seed and replicate, got {n_questions}, {n_seeds}, {n_replicates}"
        )
    questions = rng.multinomial(n_questions, np.full(n_questions, 1.0 / n_questions), size=n_replicates)
    seeds = rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=n_replicates)
    return Resamples(questions=questions, seeds=seeds)


@dataclass(frozen=True)
class ComparisonStats:
    """One metric of one split, every method (index ``m``; ``control`` is the control's index).

    Attributes:
        per_seed: ``(M, S)`` the metric of each run on all questions.
        mean: ``(M,)`` mean over seeds.
        mean_ci: ``(M, 2)`` percentile interval of the replicate means.
        diff: ``(M,)`` mean over seeds of (method - control), seed by seed (0 for the control).
        diff_ci: ``(M, 2)`` percentile interval of the paired replicate differences.
        frac_positive: ``(M,)`` share of replicates whose difference is > 0 (beyond :data:`TIE_TOLERANCE`).
        undefined: ``(M,)`` replicates whose metric was undefined (a macro AUC with no class left), left out.
        mean_samples, diff_samples: ``(B, M)`` the replicates themselves.
    """

    per_seed: np.ndarray
    mean: np.ndarray
    mean_ci: np.ndarray
    diff: np.ndarray
    diff_ci: np.ndarray
    frac_positive: np.ndarray
    undefined: np.ndarray
    mean_samples: np.ndarray
    diff_samples: np.ndarray
    control: int
    confidence: float


def percentile_interval(samples: np.ndarray, confidence: float) -> np.ndarray:
    """``(B, M)`` replicates -> ``(M, 2)`` percentile interval over the finite replicates (NaN if none)."""
    tail = 50.0 * (1.0 - confidence)
    out = np.full((samples.shape[1], 2), np.nan)
    for column in range(samples.shape[1]):
        finite = samples[:, column][np.isfinite(samples[:, column])]
        if finite.size:
            out[column] = np.percentile(finite, [tail, 100.0 - tail])
    return out


def paired_bootstrap(
    features: np.ndarray,
    statistic: Statistic,
    control: int,
    resamples: Resamples,
    confidence: float = 0.95,
) -> ComparisonStats:
    """Means, intervals and paired differences against ``control`` for ``features`` ``(M, S, n, *F)``: methods,
    seeds, questions (aligned: question ``q`` is the same question in every run), per-question features."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    features = np.asarray(features, dtype=np.float64)
    if features.ndim < 3:
        raise ValueError(f"features must be (methods, seeds, questions, ...), got shape {features.shape}")
    n_methods, n_seeds, n_questions = features.shape[:3]
    feature_shape = features.shape[3:]
    if not 0 <= control < n_methods:
        raise ValueError(f"control index {control} out of range for {n_methods} method(s)")
    if resamples.questions.shape[1] != n_questions or resamples.seeds.shape[1] != n_seeds:
        raise ValueError(
            f"resamples are for {resamples.questions.shape[1]} questions and {resamples.seeds.shape[1]} seeds, "
            f"the features for {n_questions} and {n_seeds}"
        )
    flat = features.reshape(n_methods, n_seeds, n_questions, -1)
    per_seed = statistic(flat.sum(axis=2).reshape(n_methods, n_seeds, *feature_shape))
    mean = per_seed.mean(axis=1)
    diff = (per_seed - per_seed[control]).mean(axis=1)

    n_boot = resamples.n_replicates
    mean_samples = np.empty((n_boot, n_methods))
    for start in range(0, n_boot, _CHUNK):
        counts = resamples.questions[start : start + _CHUNK].astype(np.float64)  # (b, n)
        seed_weights = resamples.seeds[start : start + _CHUNK].astype(np.float64) / n_seeds  # (b, S)
        # (b, n) @ (M, S, n, K) -> (M, S, b, K): every run's sums on the drawn questions
        sums = (counts @ flat).reshape(n_methods, n_seeds, len(counts), *feature_shape)
        values = statistic(sums)  # (M, S, b)
        mean_samples[start : start + len(counts)] = np.einsum("msb,bs->bm", values, seed_weights)
    # The same replicate for both: the difference of two identical methods is exactly 0 in every replicate.
    diff_samples = mean_samples - mean_samples[:, [control]]
    finite = np.isfinite(diff_samples)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac_positive = np.where(
            finite.any(axis=0), (finite & (diff_samples > TIE_TOLERANCE)).sum(axis=0) / finite.sum(axis=0), np.nan
        )
    return ComparisonStats(
        per_seed=per_seed,
        mean=mean,
        mean_ci=percentile_interval(mean_samples, confidence),
        diff=diff,
        diff_ci=percentile_interval(diff_samples, confidence),
        frac_positive=frac_positive,
        undefined=(~np.isfinite(mean_samples)).sum(axis=0),
        mean_samples=mean_samples,
        diff_samples=diff_samples,
        control=control,
        confidence=confidence,
    )
