"""The comparison statistics against independent references: the evaluator's own scorer for the metrics, an
explicit resampling loop with numpy's percentile for the bootstrap, and cases whose answer is known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from evl_kd_trainer.compare.stats import (
    STATISTICS,
    Resamples,
    accuracy_features,
    draw_resamples,
    multilabel_features,
    paired_bootstrap,
)
from evl_kd_trainer.eval import ParsedSample, get_split, scores_from_parsed

PTB = get_split("ptb-xl-super")


def _label_sets(indicators: np.ndarray) -> list[list[str]]:
    return [sorted(cls for cls, on in zip(PTB.classes, row) if on) for row in indicators]


def _random_multilabel(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gold and predicted indicators; class 4 (HYP) never in the gold answers, class 3 (CD) never anywhere, so
    that the AUC and F1 exclusions are exercised."""
    gold = rng.random((n, len(PTB.classes))) < 0.4
    pred = rng.random((n, len(PTB.classes))) < 0.4
    gold[:, 4] = False
    gold[:, 3] = pred[:, 3] = False
    gold[~gold.any(axis=1), 0] = True  # every gold answer names a label, as the evaluator requires
    return gold, pred


def _reference_multilabel(gold: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    parsed = [
        ParsedSample(prediction=p, reference=g, unparsed=not p) for g, p in zip(_label_sets(gold), _label_sets(pred))
    ]
    return scores_from_parsed(PTB.name, parsed)


def test_metric_statistics_equal_the_evaluator_scores():
    rng = np.random.default_rng(0)
    gold, pred = _random_multilabel(rng, 40)
    expected = _reference_multilabel(gold, pred)
    assert expected["excluded_classes"] == ["CD", "HYP"] and expected["f1_excluded_classes"] == ["CD"]
    sums = multilabel_features(gold, pred).sum(axis=0)
    for metric in ("auc", "f1", "hamming_loss"):
        assert STATISTICS[metric](sums) == pytest.approx(expected[metric], abs=1e-9), metric

    correct = rng.random(33) < 0.6
    parsed = [ParsedSample(prediction="A", reference="A", unparsed=False, correct=bool(c), group="x") for c in correct]
    accuracy = scores_from_parsed("synthetic", parsed)["accuracy"]
    assert STATISTICS["accuracy"](accuracy_features(correct).sum(axis=0)) == pytest.approx(accuracy, abs=1e-9)


def test_draws_resample_every_question_and_seed_count():
    resamples = draw_resamples(7, 3, 500, np.random.default_rng(1))
    assert resamples.questions.shape == (500, 7) and resamples.seeds.shape == (500, 3)
    assert (resamples.questions.sum(axis=1) == 7).all() and (resamples.seeds.sum(axis=1) == 3).all()
    # each question is drawn once per replicate on average (multinomial with equal probabilities)
    assert resamples.questions.mean() == pytest.approx(1.0, abs=0.05)


def _loop_reference(data, metric_of, control, resamples, confidence):
    """The bootstrap written out: expand the multiplicities into drawn indices, score every drawn run."""
    n_methods, n_seeds, n_questions = data.shape[:3]
    means = np.empty((resamples.n_replicates, n_methods))
    for b in range(resamples.n_replicates):
        questions = np.repeat(np.arange(n_questions), resamples.questions[b])
        seeds = np.repeat(np.arange(n_seeds), resamples.seeds[b])
        for m in range(n_methods):
            means[b, m] = np.mean([metric_of(data[m, s][questions]) for s in seeds])
    diffs = means - means[:, [control]]
    tail = 50 * (1 - confidence)
    return (
        means,
        diffs,
        np.percentile(means, [tail, 100 - tail], axis=0).T,
        np.percentile(diffs, [tail, 100 - tail], axis=0).T,
    )


def test_accuracy_bootstrap_equals_an_explicit_loop():
    rng = np.random.default_rng(2)
    correct = rng.random((3, 2, 9)) < np.array([0.5, 0.7, 0.3])[:, None, None]  # 3 methods, 2 seeds, 9 questions
    resamples = draw_resamples(9, 2, 300, rng)
    stats = paired_bootstrap(accuracy_features(correct), STATISTICS["accuracy"], 0, resamples, confidence=0.9)
    means, diffs, mean_ci, diff_ci = _loop_reference(correct, lambda rows: 100 * rows.mean(), 0, resamples, 0.9)
    np.testing.assert_allclose(stats.mean_samples, means, atol=1e-9)
    np.testing.assert_allclose(stats.diff_samples, diffs, atol=1e-9)
    np.testing.assert_allclose(stats.mean_ci, mean_ci, atol=1e-9)
    np.testing.assert_allclose(stats.diff_ci, diff_ci, atol=1e-9)
    np.testing.assert_allclose(stats.frac_positive, (diffs > 1e-9).mean(axis=0))  # ties: a few ulps apart
    np.testing.assert_allclose(stats.per_seed, 100 * correct.mean(axis=2))
    np.testing.assert_allclose(stats.diff, stats.mean - stats.mean[0])


def test_multilabel_bootstrap_equals_the_evaluator_scoring_each_resample():
    rng = np.random.default_rng(3)
    pairs = [_random_multilabel(rng, 12) for _ in range(2 * 2)]  # 2 methods x 2 seeds; the same gold answers
    gold = pairs[0][0]
    pred = np.stack([p for _, p in pairs]).reshape(2, 2, 12, len(PTB.classes))
    features = multilabel_features(np.broadcast_to(gold, pred.shape), pred)
    resamples = draw_resamples(12, 2, 40, rng)
    both = np.concatenate([np.broadcast_to(gold, pred.shape), pred], axis=-1)  # the loop gets gold | pred rows
    width = len(PTB.classes)
    for metric in ("auc", "f1", "hamming_loss"):
        stats = paired_bootstrap(features, STATISTICS[metric], 1, resamples)
        means, diffs, mean_ci, diff_ci = _loop_reference(
            both, lambda rows, m=metric: _reference_multilabel(rows[:, :width], rows[:, width:])[m], 1, resamples, 0.95
        )
        np.testing.assert_allclose(stats.mean_samples, means, atol=1e-9, err_msg=metric)
        np.testing.assert_allclose(stats.diff_ci, diff_ci, atol=1e-9, err_msg=metric)
        np.testing.assert_allclose(stats.mean_ci, mean_ci, atol=1e-9, err_msg=metric)


def test_identical_methods_differ_by_exactly_zero():
    rng = np.random.default_rng(4)
    correct = rng.random((1, 3, 50)) < 0.6
    features = accuracy_features(np.concatenate([correct, correct]))
    stats = paired_bootstrap(features, STATISTICS["accuracy"], 0, draw_resamples(50, 3, 2000, rng))
    assert (stats.diff_samples == 0).all() and stats.diff[1] == 0
    assert stats.diff_ci[1].tolist() == [0.0, 0.0] and stats.frac_positive[1] == 0
    assert stats.mean_ci[0, 0] < stats.mean[0] < stats.mean_ci[0, 1]  # the mean itself does vary


def test_a_shifted_method_gets_the_normal_theory_interval_around_its_shift():
    # one seed: the paired bootstrap of an accuracy difference is the bootstrap of the mean of d_q = b_q - a_q,
    # whose spread is sd(d) / sqrt(n)
    rng = np.random.default_rng(5)
    n = 400
    control = rng.random(n) < 0.5
    better = control | (rng.random(n) < 0.2)  # right wherever the control is, and on ~10 % more
    features = accuracy_features(np.stack([control, better])[:, None, :])
    stats = paired_bootstrap(features, STATISTICS["accuracy"], 0, draw_resamples(n, 1, 10000, rng))
    d = 100.0 * (better.astype(float) - control)
    half_width = 1.96 * d.std() / np.sqrt(n)
    assert stats.diff[1] == pytest.approx(d.mean())
    assert stats.diff_ci[1] == pytest.approx([d.mean() - half_width, d.mean() + half_width], abs=0.1 * half_width)
    assert stats.diff_ci[1, 0] > 0 and stats.frac_positive[1] == 1.0  # the method is right on a superset


def test_seed_resampling_gives_the_exact_distribution_over_seeds():
    # the control is always wrong; the method is right everywhere with seed 0 and nowhere with seed 1: question
    # resampling changes nothing, so a replicate's difference is 100 x (share of seed-0 draws): 0, 50 or 100 with
    # probabilities 1/4, 1/2, 1/4
    correct = np.zeros((2, 2, 30), dtype=bool)
    correct[1, 0] = True
    stats = paired_bootstrap(
        accuracy_features(correct), STATISTICS["accuracy"], 0, draw_resamples(30, 2, 20000, np.random.default_rng(6))
    )
    assert stats.diff[1] == 50.0 and stats.per_seed[1].tolist() == [100.0, 0.0]
    values, counts = np.unique(stats.diff_samples[:, 1], return_counts=True)
    assert values.tolist() == [0.0, 50.0, 100.0]
    np.testing.assert_allclose(counts / counts.sum(), [0.25, 0.5, 0.25], atol=0.015)
    assert stats.frac_positive[1] == pytest.approx(0.75, abs=0.015)
    assert stats.diff_ci[1].tolist() == [0.0, 100.0]


def test_an_undefined_metric_in_a_replicate_is_counted_and_left_out():
    # one positive gold question among four: a replicate that misses it has no class with two gold values
    gold = np.zeros((4, len(PTB.classes)), dtype=bool)
    gold[:, 1] = True
    gold[0, 0] = True
    features = multilabel_features(
        np.broadcast_to(gold, (1, 1, *gold.shape)), np.broadcast_to(gold, (1, 1, *gold.shape))
    )
    questions = np.array([[1, 1, 1, 1], [0, 4, 0, 0], [2, 2, 0, 0]])
    stats = paired_bootstrap(features, STATISTICS["auc"], 0, Resamples(questions, np.ones((3, 1), dtype=int)))
    assert stats.undefined.tolist() == [1]
    assert np.isnan(stats.mean_samples[1, 0]) and stats.mean_ci[0].tolist() == [100.0, 100.0]


def test_bad_shapes_and_levels_are_refused():
    features = accuracy_features(np.ones((2, 1, 5), dtype=bool))
    with pytest.raises(ValueError, match="resamples are for 4 questions"):
        paired_bootstrap(features, STATISTICS["accuracy"], 0, draw_resamples(4, 1, 3, np.random.default_rng(0)))
    with pytest.raises(ValueError, match="control index 2"):
        paired_bootstrap(features, STATISTICS["accuracy"], 2, draw_resamples(5, 1, 3, np.random.default_rng(0)))
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap(features, STATISTICS["accuracy"], 0, draw_resamples(5, 1, 3, np.random.default_rng(0)), 1.5)
