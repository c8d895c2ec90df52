"""ECG-Bench metrics: hand-computed cases for every split, ours vs the reference scorer's behaviour, parsing
rules, bad input, and the `evaluate` metric module loaded offline."""

import math

import pytest

from evl_kd_trainer.eval import ECGBENCH_METRIC_PATH, get_split, parse_samples, score_ecgbench, split_names
from evl_kd_trainer.eval.parsing import (
    extract_choice,
    extract_choice_reference,
    find_labels,
    find_labels_reference,
    match_phrases,
    parse_options,
)

approx = pytest.approx


# --- multi-label splits ---------------------------------------------------------------------------------------------
def test_ptb_xl_super_hand_computed():
    # classes NORM MI STTC CD HYP; per class (F1, AUC): NORM (2/3, .75), MI (1, 1), STTC (0, .375), CD (2/3, .75),
    # HYP (1, 1); 4 wrong cells of 25.
    references = ["NORM", "MI, STTC", "CD", "NORM", "HYP, CD"]
    predictions = ["NORM", "MI", "STTC and CD", "", "The superclass is HYP."]
    scores = score_ecgbench("ptb-xl-super", predictions, references)
    assert scores["f1"] == approx(100 * 2 / 3)
    assert scores["auc"] == approx(77.5)
    assert scores["hamming_loss"] == approx(16.0)
    assert scores["n"] == 5 and scores["unparsed"] == 1
    assert scores["excluded_classes"] == [] and scores["f1_excluded_classes"] == []
    assert scores["per_class"]["STTC"] == {"support": 1, "predicted": 1, "auc": approx(37.5), "f1": approx(0.0)}
    # Every class occurs in the gold answers: the reference scorer agrees here.
    compat = score_ecgbench("ptb-xl-super", predictions, references, reference_compat=True)
    assert (compat["auc"], compat["f1"], compat["hamming_loss"]) == approx((77.5, 100 * 2 / 3, 16.0))


def test_code15_st_is_not_sttc_and_norm_abnormal_rules():
    references = ["ST", "NORM", "1dAVb, RBBB", "ABNORMAL"]
    predictions = ["STTC", "NORM", "Sinus rhythm with a wide QRS. Answer: RBBB", "ABNORMAL ECG"]
    ours = score_ecgbench("code15", predictions, references)
    # "STTC" names no CODE-15% label: unparsed. Classes with no gold and no predicted positive (LBBB, SB, AF) have
    # neither AUC nor F1; over the other five: AUC (1dAVb .5, RBBB 1, ST .5, NORM 1, ABNORMAL 1), F1 (0, 1, 0, 1, 1).
    assert ours["auc"] == approx(80.0)
    assert ours["f1"] == approx(60.0)
    assert ours["hamming_loss"] == approx(100 * 2 / 32)
    assert ours["unparsed"] == 1
    assert ours["excluded_classes"] == ["LBBB", "SB", "AF"]
    assert ours["f1_excluded_classes"] == ["LBBB", "SB", "AF"]
    # The reference matches substrings ("ST" in "STTC") and scores only the gold classes (1dAVb ABNORMAL NORM RBBB ST).
    compat = score_ecgbench("code15", predictions, references, reference_compat=True)
    assert compat["auc"] == approx(90.0)
    assert compat["f1"] == approx(80.0)
    assert compat["hamming_loss"] == approx(5.0)
    assert compat["unparsed"] == 0
    assert sorted(compat["per_class"]) == ["1dAVb", "ABNORMAL", "NORM", "RBBB", "ST"]


def test_cpsc2018_hand_computed_with_a_class_only_predicted():
    references = ["NORM", "NORM", "AF", "I-AVB, STD"]
    predictions = ["NORM", "AF", "AFL", "I-AVB and STE"]
    scores = score_ecgbench("cpsc2018", predictions, references)
    # AUC over NORM (.75), AF (1/3), I-AVB (1), STD (.5); STE has no gold positive: no AUC, but its false positive
    # gives it F1 0, so F1 = (2/3 + 0 + 1 + 0 + 0) / 5.
    assert scores["auc"] == approx(100 * (0.75 + 1 / 3 + 1 + 0.5) / 4)
    assert scores["f1"] == approx(100 / 3)
    assert scores["hamming_loss"] == approx(100 * 5 / 36)
    assert scores["excluded_classes"] == ["LBBB", "RBBB", "PAC", "PVC", "STE"]
    assert scores["f1_excluded_classes"] == ["LBBB", "RBBB", "PAC", "PVC"]
    assert scores["unparsed"] == 1  # "AFL" is atrial flutter, not AF
    parsed = parse_samples("cpsc2018", predictions, references)
    assert parsed[3].prediction == ["I-AVB", "STE"] and parsed[3].reference == ["I-AVB", "STD"]


def test_single_gold_value_class_is_excluded_from_auc_and_reported():
    references = ["NORM", "NORM, MI", "NORM"]
    predictions = ["NORM", "MI", "NORM"]
    ours = score_ecgbench("ptb-xl-super", predictions, references)
    # NORM is in every gold answer (a single gold value): no AUC. STTC, CD, HYP never occur. MI alone is left.
    assert ours["auc"] == approx(100.0)
    assert ours["excluded_classes"] == ["NORM", "STTC", "CD", "HYP"]
    assert ours["per_class"]["NORM"]["auc"] != ours["per_class"]["NORM"]["auc"]  # NaN
    assert ours["f1"] == approx(90.0)  # NORM 0.8, MI 1
    assert ours["hamming_loss"] == approx(100 / 15)
    compat = score_ecgbench("ptb-xl-super", predictions, references, reference_compat=True)
    assert math.isnan(compat["auc"])  # the reference averages the NaN
    assert compat["excluded_classes"] == ["NORM"]
    assert compat["f1"] == approx(90.0) and compat["hamming_loss"] == approx(100 / 6)


def test_whole_label_matching():
    labels = ("NORM", "MI", "STTC", "CD", "HYP")
    assert find_labels("STTC", ("ST",)) == []
    assert find_labels("ST-T changes, STD", ("ST",)) == []
    assert find_labels("sinus tachycardia (ST).", ("ST",)) == ["ST"]
    assert find_labels("I-AVB", ("I-AVB", "AF")) == ["I-AVB"]
    assert find_labels("ABNORMAL", ("NORM",)) == []
    assert find_labels("MI; CD/HYP", labels) == ["MI", "CD", "HYP"]
    assert find_labels_reference("STTC", ("ST", "STTC")) == ["ST", "STTC"]


# --- ECG-QA ---------------------------------------------------------------------------------------------------------
YES_NO = (
    "Does this ECG show {}? Options: yes, no, not sure. Only answer based on the given Options without any explanation."
)
LEADS = "Which leads show it? Options: lead I, lead II, none"


def test_ecgqa_hand_computed():
    prompts = [YES_NO.format("AF"), YES_NO.format("MI"), LEADS, LEADS, YES_NO.format("LVH")]
    references = [["yes"], ["not sure"], "['none']", ["lead II"], "yes"]
    predictions = ["Yes.", "not sure", "none of these", "lead II", "I cannot tell"]
    ours = score_ecgbench("ecgqa", predictions, references, prompts)
    assert ours["accuracy"] == approx(80.0)
    assert ours["unparsed"] == 1 and ours["n"] == 5
    assert ours["per_class"]["yes"] == {"support": 2, "accuracy": approx(50.0)}
    # The reference: "no" is a substring of "not sure" and "cannot"; "lead II" never matches the lower-cased answer.
    compat = score_ecgbench("ecgqa", predictions, references, prompts, reference_compat=True)
    assert compat["accuracy"] == approx(40.0)
    assert compat["unparsed"] == 1  # "lead II": no option matched
    parsed = parse_samples("ecgqa", predictions, references, prompts, reference_compat=True)
    assert parsed[1].prediction == ["no"] and parsed[4].prediction == ["no"]


def test_ecgqa_multi_answer_sets_and_phrases():
    prompt = "Which? Options: atrial fibrillation, fibrillation, sinus rhythm, none"
    assert match_phrases("Atrial fibrillation.", ["atrial fibrillation", "fibrillation"]) == ["atrial fibrillation"]
    assert match_phrases("fibrillation, atrial fibrillation", ["atrial fibrillation", "fibrillation"]) == [
        "atrial fibrillation",
        "fibrillation",
    ]
    scores = score_ecgbench(
        "ecgqa",
        ["sinus rhythm, atrial fibrillation", "sinus rhythm"],
        ["atrial fibrillation, sinus rhythm", ["sinus rhythm", "none"]],
        [prompt, prompt],
    )
    assert scores["accuracy"] == approx(50.0)  # exact set match: the second answer misses "none"


# --- multiple choice ------------------------------------------------------------------------------------------------
CSN_PROMPT = (
    "Which diagnosis fits this ECG? Options: A. sinus rhythm B. atrial fibrillation C. sinus bradycardia "
    "D. sinus tachycardia E. 1st degree AV block F. LBBB G. RBBB H. PVC"
)


def test_csn_hand_computed():
    references = ["C", "C. sinus bradycardia", "H", "A"]
    predictions = ["C", "The answer is C.", "atrial fibrillation", "I am not sure"]
    ours = score_ecgbench("csn", predictions, references, [CSN_PROMPT] * 4)
    assert ours["accuracy"] == approx(50.0)  # the option text gives B (wrong); the last is unparsed
    assert ours["unparsed"] == 1
    assert ours["per_class"]["sinus bradycardia"] == {"support": 2, "accuracy": approx(100.0)}
    # The reference guesses (seed 42, letters A-H: B then A) for its two unparseable answers; the second hits.
    compat = score_ecgbench("csn", predictions, references, [CSN_PROMPT] * 4, reference_compat=True)
    assert compat["accuracy"] == approx(75.0)
    assert compat["unparsed"] == 2 and compat["random_guesses"] == 2


def test_g12ec_hand_computed():
    prompt = "Options:\nA. normal\nB. AF\nC. RBBB\nD. LBBB\nE. PAC\nF. PVC\nG. STD\nH. STE\nAnswer with the letter."
    references = ["B", "G", "D", "E"]
    predictions = ["b", "Answer: G", "(D) LBBB", "F. PVC, or maybe E."]
    scores = score_ecgbench("g12ec", predictions, references, [prompt] * 4)
    assert scores["accuracy"] == approx(75.0)  # the last one leads with F
    assert parse_options(prompt)["H"] == "STE"
    assert score_ecgbench("g12ec", predictions, references)["accuracy"] == approx(75.0)  # letters A-H without prompts


def test_mmmu_ecg_letters_from_options():
    prompt = "What is shown?\n(A) sinus rhythm\n(B) flutter\n(C) VT\n(D) AF"
    references = ["B", "D", "A", "C"]
    predictions = ["B", "E.", "The correct option is A", "flutter"]
    ours = score_ecgbench("mmmu-ecg", predictions, references, [prompt] * 4)
    assert ours["accuracy"] == approx(50.0)  # "E." is no option here (unparsed); "flutter" is option B (wrong)
    assert ours["unparsed"] == 1
    compat = score_ecgbench("mmmu-ecg", predictions, references, [prompt] * 4, reference_compat=True)
    # "E." -> E (wrong); "flutter" -> random guess A (seed 42, letters A-D): wrong.
    assert compat["accuracy"] == approx(50.0) and compat["random_guesses"] == 1


def test_reference_compat_guesses_follow_one_stream_across_splits():
    """PULSE's scorer seeds once and draws MMMU-ECG's guesses before CSN's: a shared stream reproduces that."""
    import random

    mmmu_prompt = "What is shown?\n(A) sinus rhythm\n(B) flutter\n(C) VT\n(D) AF"
    stream = random.Random(42)
    mmmu = parse_samples("mmmu-ecg", ["??", "??"], ["A", "B"], [mmmu_prompt] * 2, reference_compat=True, rng=stream)
    csn = parse_samples("csn", ["??"] * 3, ["A", "B", "C"], [CSN_PROMPT] * 3, reference_compat=True, rng=stream)
    expected = random.Random(42)
    assert [p.guessed for p in mmmu] == [expected.choice("ABCD") for _ in range(2)]
    assert [p.guessed for p in csn] == [expected.choice("ABCDEFGH") for _ in range(3)]
    # without a shared stream each split starts again at seed 42
    alone = parse_samples("csn", ["??"] * 3, ["A", "B", "C"], [CSN_PROMPT] * 3, reference_compat=True)
    fresh = random.Random(42)
    assert [p.guessed for p in alone] == [fresh.choice("ABCDEFGH") for _ in range(3)]


def test_synthetic_split_scored_as_multiple_choice():
    prompt = "<image>\nWhich rhythm does this ECG show?\nA. sinus rhythm\nB. atrial fibrillation\nC. sinus bradycardia"
    references = ["A", "B", "C"]
    predictions = ["A", "Atrial fibrillation", "Answer: B"]
    scores = score_ecgbench("synthetic", predictions, references, [prompt] * 3)
    assert scores["accuracy"] == approx(100 * 2 / 3)
    assert scores["per_class"] == {
        "atrial fibrillation": {"support": 1, "accuracy": approx(100.0)},
        "sinus bradycardia": {"support": 1, "accuracy": approx(0.0)},
        "sinus rhythm": {"support": 1, "accuracy": approx(100.0)},
    }


@pytest.mark.parametrize(
    ("text", "ours", "reference"),
    [
        ("B", "B", "B"),
        (" (c) ", "C", None),
        ("The answer is (D).", "D", None),
        ("Answer: (E)", "E", "E"),
        ("Answer: Bradycardia", None, "B"),  # the reference takes any capital A..H after "Answer:"
        ("B. atrial fibrillation", "B", "B"),
        ("Most likely C. Not A.", None, "A"),  # two lettered options: ours gives up, the reference takes A
        ("The correct option is G", "G", "G"),
        ("I think it is a normal ECG", None, None),
    ],
)
def test_letter_extraction(text, ours, reference):
    assert extract_choice(text) == ours
    assert extract_choice_reference(text) == reference


def test_parse_options_prefers_the_full_run():
    options = parse_options("A. patient is 60. Options: A. one B. two C. three")
    assert options == {"A": "one", "B": "two", "C": "three"}
    assert parse_options("no options here") == {}


# --- bad input ------------------------------------------------------------------------------------------------------
def test_bad_input_is_an_error_naming_the_problem():
    with pytest.raises(ValueError, match="Unknown ECG-Bench split 'ptb-xl-sub'"):
        score_ecgbench("ptb-xl-sub", ["NORM"], ["NORM"])
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        score_ecgbench("csn", ["A", "B"], ["A"])
    with pytest.raises(ValueError, match="pass `prompts`"):
        score_ecgbench("ecgqa", ["yes"], ["yes"])
    with pytest.raises(ValueError, match="reference #1 names none of the split's labels"):
        score_ecgbench("ptb-xl-super", ["NORM", "NORM"], ["NORM", "normal ECG"])
    with pytest.raises(ValueError, match="reference #0 gives no option letter"):
        score_ecgbench("mmmu-ecg", ["A"], ["sinus rhythm"])
    with pytest.raises(TypeError, match="prediction #1 must be a string"):
        score_ecgbench("csn", ["A", None], ["A", "B"])
    with pytest.raises(ValueError, match="nothing to score"):
        score_ecgbench("g12ec", [], [])
    with pytest.raises(ValueError, match="sample #0: ECG-QA prompt has no 'Options:'"):
        score_ecgbench("ecgqa", ["yes"], ["yes"], ["Is this normal?"])


def test_split_names_and_aliases():
    assert split_names() == ["ptb-xl-super", "code15", "ecgqa", "cpsc2018", "csn", "g12ec", "mmmu-ecg", "synthetic"]
    assert get_split("ptb-test").name == "ptb-xl-super"
    assert get_split("G12-TEST-NO-COT").name == "g12ec"
    assert get_split("code15").metrics == ("auc", "f1", "hamming_loss")


# --- the evaluate module --------------------------------------------------------------------------------------------
def test_evaluate_module_loads_offline_and_matches(tmp_path, monkeypatch):
    import evaluate

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    references = ["NORM", "MI, STTC", "CD", "NORM", "HYP, CD"]
    predictions = ["NORM", "MI", "STTC and CD", "", "The superclass is HYP."]
    metric = evaluate.load(ECGBENCH_METRIC_PATH, "ptb-xl-super", cache_dir=str(tmp_path))
    result = metric.compute(predictions=predictions, references=references)
    expected = score_ecgbench("ptb-xl-super", predictions, references)
    assert {key: result[key] for key in ("auc", "f1", "hamming_loss", "n", "unparsed")} == {
        key: expected[key] for key in ("auc", "f1", "hamming_loss", "n", "unparsed")
    }
    metric = evaluate.load(ECGBENCH_METRIC_PATH, cache_dir=str(tmp_path))
    qa = metric.compute(predictions=["no"], references=[["no"]], split="ecgqa", prompts=[YES_NO.format("AF")])
    assert qa["accuracy"] == approx(100.0)
    with pytest.raises(ValueError, match="Name the ECG-Bench split"):
        metric.compute(predictions=["A"], references=["A"])
