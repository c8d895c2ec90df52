"""ECGInstruct / ECG-Bench records and the questions they ask, shared by the synthetic set and the converters.

A record is LLaVA JSON, what :func:`evl_kd_trainer.data.load_ecginstruct` reads::

    {"id": ..., "image": "images/x.png",
     "conversations": [{"from": "human", "value": "<image>\\n<question>"}, {"from": "gpt", "value": <answer>}]}

Two question kinds: closed-ended (the answer is the label text, e.g. ``"Sinus tachycardia"`` or
``"MI, STTC"``) and multiple choice (lettered options one per line, the answer is the letter, which is
what ECG-Bench's letter extraction scores). PULSE's benchmark files keep their question texts on the
Hub, which this project cannot reach; the phrasings below follow the option-list style of its
classification tasks and its scorer's expectations (label abbreviations found by substring, a bare
letter for multiple choice), and they are the one place to edit if exact texts become available.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

IMAGE_TOKEN = "<image>"
LETTERS = "ABCDEFGH"
MCQ_INSTRUCTION = "Answer with the option's letter from the given choices directly."

# Rhythm questions (synthetic data).
RHYTHM_CLOSED_QUESTIONS: tuple[str, ...] = (
    "What is the rhythm shown in this ECG image?",
    "Which cardiac rhythm does this ECG show?",
    "Identify the rhythm in this 12-lead ECG.",
)
RHYTHM_MCQ_QUESTION = "Which of the following best describes the rhythm in this ECG image?"

# PTB-XL diagnostic superclasses, in ECG-Bench's label order.
PTBXL_SUPERCLASSES: tuple[str, ...] = ("NORM", "MI", "STTC", "CD", "HYP")
PTBXL_SUPERCLASS_NAMES: dict[str, str] = {
    "NORM": "normal ECG",
    "MI": "myocardial infarction",
    "STTC": "ST/T change",
    "CD": "conduction disturbance",
    "HYP": "hypertrophy",
}
PTBXL_MCQ_QUESTION = "Which diagnostic class does this ECG belong to?"
PTBXL_QUESTION = (
    "Which of the following diagnostic classes does this ECG belong to? Options: "
    + ", ".join(f"{code} ({name})" for code, name in PTBXL_SUPERCLASS_NAMES.items())
    + ". There can be more than one; answer with the class abbreviations, separated by commas."
)

# CODE-15% labels, in ECG-Bench's label order, plus its two special answers.
CODE15_LABELS: tuple[str, ...] = ("1dAVb", "RBBB", "LBBB", "SB", "ST", "AF")
CODE15_LABEL_NAMES: dict[str, str] = {
    "1dAVb": "first degree AV block",
    "RBBB": "right bundle branch block",
    "LBBB": "left bundle branch block",
    "SB": "sinus bradycardia",
    "ST": "sinus tachycardia",
    "AF": "atrial fibrillation",
}
CODE15_NORMAL, CODE15_ABNORMAL = "NORM", "ABNORMAL"
CODE15_MCQ_QUESTION = "Which of the following does this ECG show?"
CODE15_QUESTION = (
    "Which of the following abnormalities are present in this ECG? Options: "
    + ", ".join(f"{code} ({name})" for code, name in CODE15_LABEL_NAMES.items())
    + f". There can be more than one; answer with the abbreviations, separated by commas. Answer {CODE15_NORMAL}"
    f" for a normal ECG and {CODE15_ABNORMAL} for an abnormal ECG with none of these."
)


def make_record(record_id: str, image: str, question: str, answer: str) -> dict[str, Any]:
    """One single-turn LLaVA record; ``image`` is relative to the JSON file's folder (the image root)."""
    if not question or not answer:
        raise ValueError(f"Record {record_id!r}: question and answer must be non-empty.")
    return {
        "id": record_id,
        "image": image,
        "conversations": [
            {"from": "human", "value": f"{IMAGE_TOKEN}\n{question}"},
            {"from": "gpt", "value": answer},
        ],
    }


def format_options(options: Sequence[str]) -> str:
    """``"A. first\\nB. second"``: one lettered option per line."""
    if not 2 <= len(options) <= len(LETTERS):
        raise ValueError(f"A multiple-choice question needs 2 to {len(LETTERS)} options, got {len(options)}.")
    if len(set(options)) != len(options):
        raise ValueError(f"Multiple-choice options must be distinct, got {list(options)}.")
    return "\n".join(f"{LETTERS[i]}. {option}" for i, option in enumerate(options))


def multiple_choice(
    question: str,
    options: Sequence[str],
    answer: str,
    rng: np.random.Generator | None = None,
) -> tuple[str, str]:
    """(question text with lettered options and the instruction, the answer's letter).

    With an ``rng`` the options are shuffled (so the letter does not give the class away); without,
    they keep their order.
    """
    options = list(options)
    if answer not in options:
        raise ValueError(f"The answer {answer!r} is not among the options {options}.")
    if rng is not None:
        options = [options[i] for i in rng.permutation(len(options))]
    text = f"{question}\n{format_options(options)}\n{MCQ_INSTRUCTION}"
    return text, LETTERS[options.index(answer)]


def join_labels(labels: Sequence[str], order: Sequence[str]) -> str:
    """Labels in the benchmark's canonical order, comma-separated (``"MI, STTC"``)."""
    unknown = [label for label in labels if label not in order]
    if unknown:
        raise ValueError(f"Unknown label(s) {unknown}; expected among {list(order)}.")
    return ", ".join(label for label in order if label in labels)


def label_records(
    base_id: str,
    image: str,
    labels: Sequence[str],
    *,
    split: str,
    question: str,
    order: Sequence[str],
    mcq_question: str,
    mcq_names: dict[str, str],
    question_types: Sequence[str] = ("closed",),
    shuffle_options: bool = True,
) -> list[dict[str, Any]]:
    """Records for a labelled ECG (PTB-XL superclasses, CODE-15% labels).

    The test split gets one closed-ended record with id ``base_id`` whose answer lists the labels
    (ECG-Bench's ptb-test / code15-test shape). Other splits get a ``-closed`` record and, for
    ``"mcq"`` when the ECG has exactly one label among ``mcq_names``, a ``-mcq`` record whose options
    are every label of ``mcq_names`` (``"MI (myocardial infarction)"``) and whose answer is a letter.
    With ``shuffle_options`` the options are shuffled by a generator seeded from ``base_id`` (the same
    record always gets the same order, in any worker process), so the letter does not give the class away.
    """
    answer = join_labels(labels, order)
    if split == "test":
        return [make_record(base_id, image, question, answer)]
    out = []
    if "closed" in question_types:
        out.append(make_record(f"{base_id}-closed", image, question, answer))
    if "mcq" in question_types and len(labels) == 1 and labels[0] in mcq_names:
        options = [f"{code} ({name})" for code, name in mcq_names.items()]
        rng = np.random.default_rng(zlib.crc32(base_id.encode("utf-8"))) if shuffle_options else None
        text, letter = multiple_choice(mcq_question, options, f"{labels[0]} ({mcq_names[labels[0]]})", rng=rng)
        out.append(make_record(f"{base_id}-mcq", image, text, letter))
    return out
