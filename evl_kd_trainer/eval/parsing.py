"""Answer parsing for ECG-Bench: labels in free text, option letters, ECG-QA option sets.

Each rule exists twice where the reference scorer (PULSE's ``evaluate_ecgbench.py``) has a flaw:

* ours, the default: labels match as *whole* labels (``"ST"`` matches neither ``"STTC"``, ``"STD"`` nor
  ``"ST-T"``),
  ECG-QA options match as whole phrases, case-insensitively, and a shorter option found only inside a
  longer one (``"sinus"`` inside ``"sinus rhythm"``) is not counted;
* ``*_reference``: the reference behaviour (case-sensitive substrings; the multiple-choice letter
  extraction with its fallbacks), used with ``reference_compat=True`` to compare with published numbers.

Nothing here guesses: a text that yields no answer gives ``None`` / an empty list, and the scorer counts it.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from evl_kd_trainer.eval.splits import SplitSpec

OPTION_LETTERS = "ABCDEFGH"
# The sentence ECG-QA prompts end with; the reference removes it before splitting the options at commas.
ECGQA_INSTRUCTION = "Only answer based on the given Options without any explanation."
ECGQA_OPTIONS_MARKER = "Options:"
# CODE-15% answers may carry a reasoning part before the final "Answer:" (both scorers read what follows it).
ANSWER_MARKER = "Answer:"
REFERENCE_CHOICE_MARKER = "The correct option is "


# --- labels ---------------------------------------------------------------------------------------------------------
@lru_cache(maxsize=256)
def _whole_label(label: str) -> re.Pattern[str]:
    # Letters, digits or a hyphen next to the label mean it is part of a longer token ("ST" in "STTC" or
    # "ST-T", "AF" in "AFL"); hyphens inside a label ("I-AVB") are part of the label itself.
    return re.compile(rf"(?<![A-Za-z0-9-]){re.escape(label)}(?![A-Za-z0-9-])")


def has_label(text: str, label: str) -> bool:
    """Whether ``label`` occurs in ``text`` as a whole label (case-sensitive, as the label abbreviations are)."""
    return _whole_label(label).search(text) is not None


def find_labels(text: str, labels: Iterable[str]) -> list[str]:
    """The ``labels`` that occur in ``text`` as whole labels, in the order of ``labels``."""
    return [label for label in labels if has_label(text, label)]


def find_labels_reference(text: str, labels: Iterable[str]) -> list[str]:
    """The reference rule: every label that is a case-sensitive substring of ``text``."""
    return [label for label in labels if label in text]


def parse_multilabel(spec: SplitSpec, text: str, *, is_reference: bool, compat: bool = False) -> list[str]:
    """The labels of one answer of a multi-label split (``is_reference``: a gold answer, else a generation).

    CODE-15% also has two whole-answer classes, ``NORM`` and ``ABNORMAL``: a gold answer that *is* one of
    them is that class alone; a generation is read after its last ``"Answer:"`` and gets ``ABNORMAL`` if it
    says so, else ``NORM`` if it says that, plus any of the six labels (the reference's precedence).
    """
    find = find_labels_reference if compat else find_labels
    if not spec.special_labels:
        return find(text, spec.labels)
    normal, abnormal = spec.special_labels
    if is_reference:
        value = text if compat else text.strip()
        return [value] if value in spec.special_labels else find(text, spec.labels)
    if ANSWER_MARKER in text:
        text = text.split(ANSWER_MARKER)[-1]
    found = find(text, spec.labels)
    says = (lambda label: label in text) if compat else (lambda label: has_label(text, label))
    if says(normal) and not says(abnormal):
        return [normal, *found]
    if says(abnormal):
        return [abnormal, *found]
    return found


# --- lettered multiple choice ---------------------------------------------------------------------------------------
_OPTION_START = re.compile(r"(?:(?<=^)|(?<=[\s(\[:]))[(\[]?([A-H])[.)\]]\s+")


def parse_options(prompt: str | None) -> dict[str, str]:
    """The lettered options a prompt lists (``"A. text"``, ``"(B) text"``, ``"C) text"``), as ``{letter: text}``.

    Options must run A, B, C, ... in order; of several such runs the longest (then the last) wins, so a
    stray ``"A. "`` earlier in the question does not start the list. The last option ends at the end of
    its line. Fewer than two options gives ``{}``.
    """
    if not prompt:
        return {}
    starts = [(m.group(1), m.start(), m.end()) for m in _OPTION_START.finditer(prompt)]
    best: list[tuple[str, int, int]] = []
    for first, (letter, _, _) in enumerate(starts):
        if letter != "A":
            continue
        chain = [starts[first]]
        for candidate in starts[first + 1 :]:
            if len(chain) < len(OPTION_LETTERS) and candidate[0] == OPTION_LETTERS[len(chain)]:
                chain.append(candidate)
        if len(chain) >= len(best):
            best = chain
    if len(best) < 2:
        return {}
    options: dict[str, str] = {}
    for index, (letter, _, end) in enumerate(best):
        stop = best[index + 1][1] if index + 1 < len(best) else len(prompt)
        text = prompt[end:stop]
        if index + 1 == len(best):
            text = text.split("\n", 1)[0]
        options[letter] = text.strip().rstrip(",;").strip()
    return options


def _letter_class(letters: str) -> str:
    return "[" + "".join(sorted(set(letters))) + "]"


def extract_choice(text: str, letters: str = OPTION_LETTERS, options: Mapping[str, str] | None = None) -> str | None:
    """The option letter an answer gives, or ``None``; ``letters`` are the valid ones.

    Tried in order: the whole answer is a letter (``"B"``, ``"(B)"``, ``"b."``); an explicit statement
    (``"Answer: B"``, ``"the answer is (B)"``, ``"correct option is B"``: the last one counts); the answer
    starts with a lettered option (``"B. Sinus rhythm"``); exactly one distinct lettered option (``"B."``,
    ``"(B)"``) anywhere; exactly one option's text (from ``options``) as a whole phrase.
    """
    stripped = text.strip()
    if not stripped or not letters:
        return None
    cls = _letter_class(letters)
    whole = re.fullmatch(rf"[(\[]?({cls})[)\].:]?", stripped, flags=re.IGNORECASE)
    if whole:
        return whole.group(1).upper()
    stated = re.findall(
        rf"\b(?i:answer|option|choice)(?:\s+(?i:is))?\s*[:\-]?\s*[(\[]?({cls})(?![A-Za-z0-9])", stripped
    )
    if stated:
        return stated[-1]
    leading = re.match(rf"[(\[]?({cls})[)\].:](?:\s|$)", stripped)
    if leading:
        return leading.group(1)
    mentioned = set(re.findall(rf"(?<![A-Za-z0-9(\[])[(\[]?({cls})[)\].](?=\s|$)", stripped))
    if len(mentioned) == 1:
        return mentioned.pop()
    if options:
        valid = {letter: option for letter, option in options.items() if letter in letters and option}
        matched = match_phrases(stripped, list(valid.values()))
        if len(matched) == 1:
            return next(letter for letter, option in valid.items() if option == matched[0])
    return None


def extract_choice_reference(text: str) -> str | None:
    """The reference letter extraction (A-H): the bare letter; else the first of ``"A."`` .. ``"H."`` found
    anywhere (in letter order, not text order); else the letter after the last ``"The correct option is "``;
    else the first of A .. H (letter order) anywhere after the last ``"Answer:"``; else ``None``."""
    if text in tuple(OPTION_LETTERS):
        return text
    for letter in OPTION_LETTERS:
        if f"{letter}." in text:
            return letter
    if REFERENCE_CHOICE_MARKER in text:
        after = text.split(REFERENCE_CHOICE_MARKER)[-1][:1]
        return after if after and after in OPTION_LETTERS else None
    if ANSWER_MARKER in text:
        tail = text.split(ANSWER_MARKER)[-1].strip()
        return next((letter for letter in OPTION_LETTERS if letter in tail), None)
    return None


# --- ECG-QA ---------------------------------------------------------------------------------------------------------
def match_phrases(text: str, phrases: Sequence[str]) -> list[str]:
    """The ``phrases`` found in ``text`` as whole phrases, case-insensitively, in the order of ``phrases``.

    A phrase whose every occurrence lies inside an occurrence of a longer found phrase is dropped, so with
    options ``"no"`` and ``"not sure"`` (or ``"fibrillation"`` and ``"atrial fibrillation"``) only the
    longer one counts when only the longer one was written.
    """
    folded = text.casefold()
    spans: dict[str, list[tuple[int, int]]] = {}
    for phrase in phrases:
        key = phrase.strip().casefold()
        if not key or phrase in spans:
            continue
        found = [(m.start(), m.end()) for m in re.finditer(rf"(?<!\w){re.escape(key)}(?!\w)", folded)]
        if found:
            spans[phrase] = found
    kept = []
    for phrase, occurrences in spans.items():
        longer = [
            span for other, others in spans.items() if len(other.strip()) > len(phrase.strip()) for span in others
        ]
        inside = all(any(a <= start and end <= b for a, b in longer) for start, end in occurrences)
        if not inside:
            kept.append(phrase)
    return kept


def ecgqa_candidates(prompt: str, *, compat: bool = False) -> list[str]:
    """The answer options of an ECG-QA prompt: the text after its last ``"Options:"``, without the closing
    instruction sentence, split at commas.

    ``compat``: exactly the reference's list (items only stripped). Otherwise items also lose trailing
    ``.``/``;`` (so the last option before the instruction is usable), empty and repeated items are dropped,
    and a prompt without ``"Options:"`` is an error (the reference would split the whole question).
    """
    if not compat and ECGQA_OPTIONS_MARKER not in prompt:
        raise ValueError(f"ECG-QA prompt has no {ECGQA_OPTIONS_MARKER!r} list: {prompt[:200]!r}")
    tail = prompt.split(ECGQA_OPTIONS_MARKER)[-1].replace(ECGQA_INSTRUCTION, "")
    items = [item.strip() for item in tail.split(",")]
    if compat:
        return items
    cleaned: list[str] = []
    for item in items:
        item = item.rstrip(".;").strip()
        if item and item not in cleaned:
            cleaned.append(item)
    return cleaned


def normalize_answer(answer: str) -> str:
    """How ECG-QA answers are compared in our scoring: case-folded, stripped, without a trailing period."""
    return answer.strip().rstrip(".").strip().casefold()


def _as_list(reference: Any) -> list[str] | None:
    """A gold answer given as a list, or as the text of a JSON / Python list literal; else ``None``."""
    if isinstance(reference, (list, tuple)):
        return [str(item) for item in reference]
    if isinstance(reference, str) and reference.strip().startswith("["):
        for loader in (json.loads, ast.literal_eval):
            try:
                value = loader(reference.strip())
            except (ValueError, SyntaxError):
                continue
            if isinstance(value, list):
                return [str(item) for item in value]
    return None


def ecgqa_reference(reference: Any, candidates: Sequence[str], *, compat: bool = False) -> frozenset[str]:
    """The gold answer set of an ECG-QA record.

    ECG-Bench's gold answer is a list of options (the reference compares ``set(gold)``); a list written as
    text is read as that list. A plain string is, in our scoring, the options it names as whole phrases
    (or the string itself when it names none); with ``compat`` it is one answer, compared verbatim.
    """
    items = _as_list(reference)
    if compat:
        return frozenset(items if items is not None else [str(reference)])
    if items is None:
        items = match_phrases(str(reference), candidates) or [str(reference)]
    return frozenset(normalize_answer(item) for item in items if normalize_answer(item))


def ecgqa_prediction(text: str, candidates: Sequence[str], *, compat: bool = False) -> frozenset[str]:
    """The options an ECG-QA answer names: ours, whole phrases (see :func:`match_phrases`), normalised;
    the reference, every option that is a substring of the lower-cased answer, verbatim."""
    if compat:
        lowered = text.lower()
        return frozenset(item for item in candidates if item in lowered)
    return frozenset(normalize_answer(item) for item in match_phrases(text, candidates))
