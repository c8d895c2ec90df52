"""ECG-Bench metrics as plain functions: :func:`score_ecgbench` and the per-sample :func:`parse_samples`.

Multi-label splits (PTB-XL Super, CODE-15%, CPSC-2018) get Macro AUC, Macro F1 and Hamming loss; the others
accuracy; every number is x100, as in the paper's Table 1. Per class, the "AUC" is ROC AUC of 0/1 predictions
(the reference computes it so; it equals balanced accuracy).

Our scoring differs from the reference scorer only where the reference is wrong (``reference_compat=True``
restores it, for comparison with published numbers):

* labels and ECG-QA options match as whole labels / phrases (:mod:`evl_kd_trainer.eval.parsing`);
* a class whose gold column has a single value (never or always present) has no AUC: it is left out of the
  macro AUC and listed in ``excluded_classes`` (the reference averages a NaN, making the macro AUC NaN);
  a class with no gold *and* no predicted positive has no F1 and is left out of the macro F1 likewise
  (``f1_excluded_classes``); on the full ECG-Bench splits every class occurs, so neither happens there;
* the classes are the split's whole label space, so a predicted label that no gold answer has is still a
  false positive (the reference only scores classes that occur in the gold answers);
* an answer nothing can be parsed from is counted (``unparsed``) and scored as it is: a wrong choice, or no
  label (the reference replaces an unparseable multiple-choice answer by a random letter, seed 42);
* a gold answer nothing can be parsed from is an error naming the sample, not a silent row of zeros.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from evl_kd_trainer.eval.parsing import (
    ecgqa_candidates,
    ecgqa_prediction,
    ecgqa_reference,
    extract_choice,
    extract_choice_reference,
    parse_multilabel,
    parse_options,
)
from evl_kd_trainer.eval.splits import CHOICE, ECGQA, MULTILABEL, SplitSpec, get_split

# The reference scorer takes the first character of CSN's and G12EC's gold answer, and MMMU-ECG's whole answer.
_REFERENCE_GOLD_FIRST_CHAR = frozenset({"csn", "g12ec", "synthetic"})
REFERENCE_SEED = 42
# The order in which PULSE's `evaluate_ecgbench.py` scores the splits (its `__main__`); only the multiple-choice
# splits draw random guesses, from one `random.seed(42)` stream for the whole process.
REFERENCE_SCORING_ORDER = ("mmmu-ecg", "ptb-xl-super", "cpsc2018", "csn", "g12ec", "ecgqa", "code15")


@dataclass
class ParsedSample:
    """What was read from one (prediction, reference) pair; written per sample so parsing can be audited.

    ``prediction`` / ``reference``: sorted label lists (multi-label, ECG-QA) or an option letter (choice).
    ``unparsed``: nothing could be read from the prediction. ``guessed``: the reference's random letter that
    replaced it (``reference_compat`` only). ``correct``: for accuracy splits. ``group``: the class the sample
    counts towards in the per-class accuracy (the gold option's text, or the gold answer set).
    """

    prediction: Any
    reference: Any
    unparsed: bool
    correct: bool | None = None
    guessed: str | None = None
    group: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "parsed_prediction": self.prediction,
            "parsed_reference": self.reference,
            "unparsed": self.unparsed,
            "correct": self.correct,
            "random_guess": self.guessed,
            "class": self.group,
        }


def _check_inputs(
    spec: SplitSpec, predictions: Sequence[Any], references: Sequence[Any], prompts: Sequence[Any] | None
) -> None:
    for name, values in (("predictions", predictions), ("references", references), ("prompts", prompts)):
        if values is not None and (isinstance(values, (str, bytes)) or not hasattr(values, "__len__")):
            raise TypeError(
                f"{spec.name}: `{name}` must be a sequence (one entry per sample), got {type(values).__name__}"
            )
    if len(predictions) != len(references):
        raise ValueError(f"{spec.name}: {len(predictions)} predictions but {len(references)} references.")
    if prompts is not None and len(prompts) != len(references):
        raise ValueError(f"{spec.name}: {len(prompts)} prompts but {len(references)} references.")
    if not references:
        raise ValueError(f"{spec.name}: nothing to score (no samples).")
    if spec.task == ECGQA and prompts is None:
        raise ValueError(f"{spec.name}: ECG-QA is scored against each prompt's 'Options:' list; pass `prompts`.")
    for index, prediction in enumerate(predictions):
        if not isinstance(prediction, str):
            raise TypeError(f"{spec.name}: prediction #{index} must be a string, got {type(prediction).__name__}")
    for index, reference in enumerate(references):
        allowed = (str, list, tuple) if spec.task == ECGQA else (str,)
        if not isinstance(reference, allowed):
            raise TypeError(f"{spec.name}: reference #{index} must be a string, got {type(reference).__name__}")
    if prompts is not None:
        for index, prompt in enumerate(prompts):
            if prompt is not None and not isinstance(prompt, str):
                raise TypeError(f"{spec.name}: prompt #{index} must be a string or None, got {type(prompt).__name__}")


def parse_samples(
    split: str,
    predictions: Sequence[str],
    references: Sequence[Any],
    prompts: Sequence[str | None] | None = None,
    *,
    reference_compat: bool = False,
    rng: random.Random | None = None,
) -> list[ParsedSample]:
    """Parse every prediction and gold answer of ``split`` (see :func:`score_ecgbench` for the arguments;
    ``rng`` draws the reference-compat random guesses, a fresh ``Random(42)`` when ``None``).

    Raises:
        ValueError: unknown split, mismatched lengths, no sample, ECG-QA without prompts, or (our scoring) a
            gold answer that names no label / option, naming the sample index.
    """
    spec = get_split(split)
    _check_inputs(spec, predictions, references, prompts)
    prompt_of = (lambda index: prompts[index]) if prompts is not None else (lambda index: None)
    if spec.task == MULTILABEL:
        return [
            _parse_multilabel(spec, i, p, r, reference_compat) for i, (p, r) in enumerate(zip(predictions, references))
        ]
    if spec.task == ECGQA:
        return [
            _parse_ecgqa(spec, i, p, r, prompt_of(i), reference_compat)
            for i, (p, r) in enumerate(zip(predictions, references))
        ]
    rng = rng if rng is not None else random.Random(REFERENCE_SEED)
    return [
        _parse_choice(spec, i, p, r, prompt_of(i), reference_compat, rng)
        for i, (p, r) in enumerate(zip(predictions, references))
    ]


def _parse_multilabel(spec: SplitSpec, index: int, prediction: str, reference: str, compat: bool) -> ParsedSample:
    gold = parse_multilabel(spec, reference, is_reference=True, compat=compat)
    if not gold and not compat:
        raise ValueError(
            f"{spec.name}: reference #{index} names none of the split's labels {list(spec.classes)}: {reference[:200]!r}"
        )
    predicted = parse_multilabel(spec, prediction, is_reference=False, compat=compat)
    return ParsedSample(prediction=predicted, reference=gold, unparsed=not predicted)


def _parse_ecgqa(
    spec: SplitSpec, index: int, prediction: str, reference: Any, prompt: str | None, compat: bool
) -> ParsedSample:
    if prompt is None:
        raise ValueError(f"{spec.name}: sample #{index} has no prompt, so its options are unknown.")
    try:
        candidates = ecgqa_candidates(prompt, compat=compat)
    except ValueError as error:
        raise ValueError(f"{spec.name}: sample #{index}: {error}") from error
    gold = ecgqa_reference(reference, candidates, compat=compat)
    if not gold and not compat:
        raise ValueError(f"{spec.name}: reference #{index} is empty: {reference!r}")
    predicted = ecgqa_prediction(prediction, candidates, compat=compat)
    return ParsedSample(
        prediction=sorted(predicted),
        reference=sorted(gold),
        unparsed=not predicted,
        correct=predicted == gold,
        group=", ".join(sorted(gold)),
    )


def _parse_choice(
    spec: SplitSpec,
    index: int,
    prediction: str,
    reference: str,
    prompt: str | None,
    compat: bool,
    rng: random.Random,
) -> ParsedSample:
    options = parse_options(prompt)
    if compat:
        gold = reference[:1] if spec.name in _REFERENCE_GOLD_FIRST_CHAR else reference
        predicted = extract_choice_reference(prediction)
        guessed = rng.choice(spec.letters) if predicted is None else None
        chosen = guessed or predicted
        return ParsedSample(
            prediction=chosen,
            reference=gold,
            unparsed=predicted is None,
            correct=chosen == gold,
            guessed=guessed,
            group=options.get(gold, gold),
        )
    letters = "".join(options) if options else spec.letters
    gold = extract_choice(reference, letters, options)
    if gold is None:
        raise ValueError(
            f"{spec.name}: reference #{index} gives no option letter among {letters!r}: {reference[:200]!r}"
        )
    predicted = extract_choice(prediction, letters, options)
    return ParsedSample(
        prediction=predicted,
        reference=gold,
        unparsed=predicted is None,
        correct=predicted == gold,
        group=options.get(gold, gold),
    )


# --- metrics ----------------------------------------------------------------------------------------------------
def _percent(value: float | None) -> float:
    return float("nan") if value is None else 100.0 * float(value)


def _binarize(label_sets: Sequence[Sequence[str]], classes: Sequence[str]) -> np.ndarray:
    return np.array([[cls in labels for cls in classes] for labels in label_sets], dtype=np.int64).reshape(
        len(label_sets), len(classes)
    )


def _multilabel_scores(spec: SplitSpec, parsed: Sequence[ParsedSample]) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    classes = list(spec.classes)
    gold = _binarize([s.reference for s in parsed], classes)
    pred = _binarize([s.prediction for s in parsed], classes)
    n = len(parsed)
    per_class: dict[str, dict[str, Any]] = {}
    aucs, f1s, excluded, f1_excluded = [], [], [], []
    for column, cls in enumerate(classes):
        y, p = gold[:, column], pred[:, column]
        support = int(y.sum())
        tp, fp, fn = int((y & p).sum()), int(((1 - y) & p).sum()), int((y & (1 - p)).sum())
        auc = float(roc_auc_score(y, p)) if 0 < support < n else None
        f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else None
        if auc is None:
            excluded.append(cls)
        else:
            aucs.append(auc)
        if f1 is None:
            f1_excluded.append(cls)
        else:
            f1s.append(f1)
        per_class[cls] = {"support": support, "predicted": int(p.sum()), "auc": _percent(auc), "f1": _percent(f1)}
    return {
        "auc": _percent(float(np.mean(aucs)) if aucs else None),
        "f1": _percent(float(np.mean(f1s)) if f1s else None),
        "hamming_loss": _percent(float((gold != pred).mean())),
        "excluded_classes": excluded,
        "f1_excluded_classes": f1_excluded,
        "per_class": per_class,
    }


def _multilabel_scores_reference(parsed: Sequence[ParsedSample]) -> dict[str, Any]:
    """The reference computation: classes = those in the gold answers (sorted, as MultiLabelBinarizer fits
    them), per-class ROC AUC with NaN where undefined, plain means."""
    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import f1_score, hamming_loss, roc_auc_score

    classes = sorted({label for sample in parsed for label in sample.reference})
    gold = _binarize([s.reference for s in parsed], classes)
    pred = _binarize([s.prediction for s in parsed], classes)
    f1s = f1_score(gold, pred, average=None, zero_division=0) if classes else np.array([])
    per_class: dict[str, dict[str, Any]] = {}
    aucs = []
    for column, cls in enumerate(classes):
        try:
            with warnings.catch_warnings():  # recent scikit-learn warns and returns NaN instead of raising
                warnings.simplefilter("ignore", UndefinedMetricWarning)
                auc = float(roc_auc_score(gold[:, column], pred[:, column]))
        except ValueError:  # one gold value only: the reference keeps a NaN
            auc = float("nan")
        aucs.append(auc)
        per_class[cls] = {
            "support": int(gold[:, column].sum()),
            "predicted": int(pred[:, column].sum()),
            "auc": _percent(auc),
            "f1": _percent(float(f1s[column])),
        }
    return {
        "auc": _percent(float(np.mean(aucs)) if aucs else None),
        "f1": _percent(float(np.mean(f1s)) if classes else None),
        "hamming_loss": _percent(float(hamming_loss(gold, pred)) if classes else None),
        "excluded_classes": [cls for cls, auc in zip(classes, aucs) if math.isnan(auc)],
        "f1_excluded_classes": [],
        "per_class": per_class,
    }


def _accuracy_scores(parsed: Sequence[ParsedSample]) -> dict[str, Any]:
    groups: dict[str, list[bool]] = {}
    for sample in parsed:
        groups.setdefault(str(sample.group), []).append(bool(sample.correct))
    return {
        "accuracy": _percent(sum(bool(s.correct) for s in parsed) / len(parsed)),
        "excluded_classes": [],
        "per_class": {
            group: {"support": len(hits), "accuracy": _percent(sum(hits) / len(hits))}
            for group, hits in sorted(groups.items())
        },
    }


def scores_from_parsed(split: str, parsed: Sequence[ParsedSample], *, reference_compat: bool = False) -> dict[str, Any]:
    """The metrics of already parsed samples (what :func:`score_ecgbench` returns)."""
    spec = get_split(split)
    if not parsed:
        raise ValueError(f"{spec.name}: nothing to score (no samples).")
    if spec.task == MULTILABEL:
        scores = _multilabel_scores_reference(parsed) if reference_compat else _multilabel_scores(spec, parsed)
    elif spec.task in (CHOICE, ECGQA):
        scores = _accuracy_scores(parsed)
    else:  # pragma: no cover - SPLITS only holds the three task types
        raise ValueError(f"{spec.name}: unknown task {spec.task!r}")
    result: dict[str, Any] = {
        "split": spec.name,
        "task": spec.task,
        **{key: scores.pop(key) for key in spec.metrics},
        "n": len(parsed),
        "unparsed": sum(sample.unparsed for sample in parsed),
        "reference_compat": reference_compat,
        **scores,
    }
    if reference_compat and spec.task == CHOICE:
        result["random_guesses"] = sum(sample.guessed is not None for sample in parsed)
    return result


def score_ecgbench(
    split: str,
    predictions: Sequence[str],
    references: Sequence[Any],
    prompts: Sequence[str | None] | None = None,
    *,
    reference_compat: bool = False,
    rng: random.Random | None = None,
) -> dict[str, Any]:
    """Score generated answers on one ECG-Bench split, x100 as in the paper's Table 1.

    Args:
        split: ``ptb-xl-super``, ``code15``, ``cpsc2018`` (multi-label), ``ecgqa``, ``csn``, ``g12ec``,
            ``mmmu-ecg`` or ``synthetic`` (accuracy); ECG-Bench's file names (``ptb-test``, ...) work too.
        predictions: the generated answer texts.
        references: the gold answer texts (ECG-QA: also a list of options).
        prompts: the question texts. Needed for ECG-QA (its options); for multiple choice they give the valid
            letters and the option texts (matched when an answer gives the text instead of the letter).
        reference_compat: score as PULSE's reference scorer does (substring matching, NaN AUC, random guess
            for unparseable choices), to compare with published numbers.
        rng: the stream the reference-compat random guesses come from; default a fresh ``random.Random(42)``
            per call. PULSE's scorer seeds once per process and draws in its own order (every MMMU-ECG file,
            then CSN, then G12EC): pass one shared ``random.Random(42)`` through the splits in
            :data:`REFERENCE_SCORING_ORDER` to reproduce a whole run (``evl-kd evaluate`` does).

    Returns:
        ``{"auc", "f1", "hamming_loss"}`` (multi-label) or ``{"accuracy"}``, plus ``split``, ``task``, ``n``,
        ``unparsed`` (answers nothing was parsed from), ``excluded_classes`` (left out of the macro AUC),
        ``f1_excluded_classes`` (multi-label), ``per_class`` and ``reference_compat``; ``random_guesses``
        for multiple choice in compat mode. An undefined metric is NaN.
    """
    parsed = parse_samples(split, predictions, references, prompts, reference_compat=reference_compat, rng=rng)
    return scores_from_parsed(split, parsed, reference_compat=reference_compat)
