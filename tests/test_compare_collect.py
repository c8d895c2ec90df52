"""Per-question files as the evaluator writes them -> aligned features whose statistics are the evaluator's scores
(multi-label, ECG-QA and multiple-choice splits), with questions missing from one run left out of all."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evl_kd_trainer.compare.collect import read_rows, split_features
from evl_kd_trainer.compare.stats import STATISTICS
from evl_kd_trainer.eval.generate import Generation
from evl_kd_trainer.eval.records import EvalRecord, SplitRecords
from evl_kd_trainer.eval.report import write_predictions
from evl_kd_trainer.eval.runner import score_split

ECGQA_PROMPT = "Does this ECG show atrial fibrillation? Options: yes, no, not sure. Answer from the Options."
SPLITS = {
    "ptb-xl-super": (
        ["NORM", "MI, STTC", "CD", "HYP, MI", "NORM", "STTC"],
        [["NORM", "MI", "CD", "MI HYP", "STTC", "STTC"], ["MI", "MI, STTC", "CD", "HYP", "NORM", "nothing"]],
        "What are the diagnostic superclasses?",
    ),
    "ecgqa": (
        ["yes", "no", "not sure", "yes", "no", "no"],
        [["yes", "yes", "not sure", "no", "no", "no"], ["yes", "no", "no", "yes", "no", "?"]],
        ECGQA_PROMPT,
    ),
    "synthetic": (
        ["A", "B", "C", "A", "B", "C"],
        [["A", "B", "A", "A", "C", "C"], ["B", "B", "C", "A", "B", "x"]],
        "Which rhythm?\nA. sinus rhythm\nB. atrial fibrillation\nC. sinus bradycardia",
    ),
}


def _write_run(tmp_path, split, references, answers, prompt, name, skip=None):
    """The evaluator's own scoring of fake answers; ``skip``: a question this run did not score (an unreadable image)."""
    records = [EvalRecord(f"q{i}", prompt, ref, None, "test.json", i) for i, ref in enumerate(references)]
    generations = [None if i == skip else Generation(text, 1, False) for i, text in enumerate(answers)]
    scores, rows = score_split(split, SplitRecords("test.json", records), generations, [], reference_compat=False)
    path = tmp_path / f"{name}.jsonl"
    write_predictions(path, rows)
    return scores, read_rows(path)


@pytest.mark.parametrize("split", list(SPLITS))
def test_features_reproduce_the_evaluator_scores_of_each_run(tmp_path, split):
    references, answers, prompt = SPLITS[split]
    written = [_write_run(tmp_path, split, references, a, prompt, f"m{m}") for m, a in enumerate(answers)]
    features = split_features(split, [[rows] for _, rows in written])  # 2 methods x 1 seed
    assert features.question_ids == [f"q{i}" for i in range(6)] and features.dropped == 0
    for metric in features.metrics:
        sums = features.features[metric].sum(axis=2)
        values = STATISTICS[metric](sums)
        for m, (scores, _) in enumerate(written):
            assert values[m, 0] == pytest.approx(scores[metric], abs=1e-9), (split, metric, m)


def test_a_question_one_run_did_not_score_is_left_out_of_every_run(tmp_path):
    references, answers, prompt = SPLITS["synthetic"]
    _, full = _write_run(tmp_path, "synthetic", references, answers[0], prompt, "full")
    _, partial = _write_run(tmp_path, "synthetic", references, answers[1], prompt, "partial", skip=2)
    features = split_features("synthetic", [[full], [partial]])
    assert features.question_ids == ["q0", "q1", "q3", "q4", "q5"] and features.dropped == 1
    correct = features.features["accuracy"][..., 0]
    assert correct[0, 0].tolist() == [1, 1, 1, 0, 1] and correct[1, 0].tolist() == [0, 1, 1, 1, 0]


def test_repeated_ids_are_kept_apart_by_their_order(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"id": "a", "correct": c}) + "\n" for c in (True, False)))
    rows = read_rows(path)
    assert list(rows) == ["a", "a#2"] and [r["correct"] for r in rows.values()] == [True, False]
    assert np.asarray(split_features("synthetic", [[rows], [rows]]).features["accuracy"]).shape == (2, 1, 2, 2)
