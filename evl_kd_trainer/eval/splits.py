"""The ECG-Bench splits we score: their task type, label space, answer letters and Table 1 column title.

One :class:`SplitSpec` per split holds everything the parser and the scorer need to know about it, so
adding a split is one entry here. The order of :data:`SPLITS` is the column order of the paper's Table 1
(PTB-XL-Super, CODE-15%, ECG-QA, CPSC-2018, CSN, G12EC, MMMU-ECG), with our ``synthetic`` split last.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

MULTILABEL = "multilabel"  # Macro AUC, Macro F1, Hamming loss over a fixed label space
CHOICE = "choice"  # lettered multiple choice, accuracy
ECGQA = "ecgqa"  # ECG-QA: answer set drawn from the prompt's "Options:", accuracy on exact set match

MULTILABEL_METRICS = ("auc", "f1", "hamming_loss")
ACCURACY_METRICS = ("accuracy",)


@dataclass(frozen=True)
class SplitSpec:
    """What scoring one split needs.

    Attributes:
        name: canonical name (``score_ecgbench``'s ``split`` argument).
        title: the split's column title in Table 1.
        task: :data:`MULTILABEL`, :data:`CHOICE` or :data:`ECGQA`.
        labels: the label space of a multi-label split, matched in answers as whole labels.
        special_labels: CODE-15%'s whole-answer labels (``NORM``/``ABNORMAL``), scored as extra classes.
        letters: the option letters of a multiple-choice split when the prompt does not list its options;
            also the pool of the reference scorer's random guess.
        aliases: other names accepted for the split (ECG-Bench's folder / file names).
        size: number of records in the full ECG-Bench split (``None``: not an ECG-Bench split).
    """

    name: str
    title: str
    task: str
    labels: tuple[str, ...] = ()
    special_labels: tuple[str, ...] = ()
    letters: str = ""
    aliases: tuple[str, ...] = ()
    size: int | None = None

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metric keys of this split, in Table 1 order."""
        return MULTILABEL_METRICS if self.task == MULTILABEL else ACCURACY_METRICS

    @property
    def classes(self) -> tuple[str, ...]:
        """All classes a multi-label split is scored on (label space, then the special answers)."""
        return self.labels + self.special_labels


SPLITS: tuple[SplitSpec, ...] = (
    SplitSpec(
        "ptb-xl-super",
        "PTB-XL-Super",
        MULTILABEL,
        labels=("NORM", "MI", "STTC", "CD", "HYP"),
        aliases=("ptb-test", "ptb-xl", "ptbxl-super", "ptb"),
        size=2082,
    ),
    SplitSpec(
        "code15",
        "CODE-15%",
        MULTILABEL,
        labels=("1dAVb", "RBBB", "LBBB", "SB", "ST", "AF"),
        special_labels=("NORM", "ABNORMAL"),
        aliases=("code15-test", "code-15", "code-15%"),
        size=1400,
    ),
    SplitSpec("ecgqa", "ECG-QA", ECGQA, aliases=("ecgqa-test", "ecg-qa"), size=1317),
    SplitSpec(
        "cpsc2018",
        "CPSC-2018",
        MULTILABEL,
        labels=("NORM", "AF", "I-AVB", "LBBB", "RBBB", "PAC", "PVC", "STD", "STE"),
        aliases=("cpsc-test", "cpsc", "cpsc-2018"),
        size=2061,
    ),
    SplitSpec("csn", "CSN", CHOICE, letters="ABCDEFGH", aliases=("csn-test-no-cot", "csn-test"), size=1611),
    SplitSpec("g12ec", "G12EC", CHOICE, letters="ABCDEFGH", aliases=("g12-test-no-cot", "g12-test", "g12"), size=2026),
    SplitSpec("mmmu-ecg", "MMMU-ECG", CHOICE, letters="ABCD", aliases=("mmmu", "mmmu_ecg"), size=200),
    # Our synthetic ECG generator's multiple-choice test split (evl_kd_trainer.ecg): lettered options in the
    # prompt, gold answer = the letter. The letters come from the prompt; these are the fallback.
    SplitSpec("synthetic", "Synthetic", CHOICE, letters="ABCDEFGH", aliases=("synthetic-test",)),
)

_BY_NAME: dict[str, SplitSpec] = {}
for _spec in SPLITS:
    for _name in (_spec.name, *_spec.aliases):
        _BY_NAME[_name.lower()] = _spec


def split_names() -> list[str]:
    """The canonical split names, in Table 1 order."""
    return [spec.name for spec in SPLITS]


def get_split(name: str) -> SplitSpec:
    """The :class:`SplitSpec` for a canonical name or an alias (case-insensitive).

    Raises:
        ValueError: for an unknown split, listing the known ones.
    """
    if not isinstance(name, str) or name.strip().lower() not in _BY_NAME:
        known = ", ".join(f"{spec.name} ({', '.join(spec.aliases)})" if spec.aliases else spec.name for spec in SPLITS)
        raise ValueError(f"Unknown ECG-Bench split {name!r}. Known splits (aliases): {known}.")
    return _BY_NAME[name.strip().lower()]


SPLIT_FILE_EXTENSIONS = (".parquet", ".json", ".jsonl")


def split_of_file(path: str) -> str | None:
    """The canonical split an ECG-Bench file is named after, or ``None``.

    PULSE's files are named after their split (``ptb-test.json``, ``csn-test-no-cot.json``); the Hugging Face
    parquet files sit in a folder named after it (``ecgqa-test/test-00000-of-00001.parquet``).
    """
    if not path.lower().endswith(SPLIT_FILE_EXTENSIONS):
        return None
    normalized = os.path.normpath(path)
    stem = os.path.splitext(os.path.basename(normalized))[0]
    for candidate in (stem, os.path.basename(os.path.dirname(normalized))):
        if candidate.strip().lower() in _BY_NAME:
            return _BY_NAME[candidate.strip().lower()].name
    return None


def resolve_split_files(
    splits: Sequence[str], data_files: Sequence[str] | None = None, *, keys: tuple[str, str] = ("splits", "data_files")
) -> list[tuple[str, str]]:
    """``(canonical split name, file)`` pairs from split names and one file per split, or from the files alone.

    With ``data_files``, ``splits`` are names or aliases, one per file (as ``evl-kd evaluate`` takes them). Without,
    each entry of ``splits`` is a split file named as ECG-Bench names them (see :func:`split_of_file`). ``keys``
    name the two settings in the errors.

    Raises:
        ValueError: an unknown split, a count mismatch, a file whose name names no split, or a split given twice.
    """
    splits_key, files_key = keys
    if data_files is not None:
        if len(data_files) != len(splits):
            raise ValueError(
                f"`{files_key}` needs one file per split of `{splits_key}`: {len(splits)} split(s), "
                f"{len(data_files)} file(s)."
            )
        pairs = [(get_split(name).name, str(path)) for name, path in zip(splits, data_files)]
    else:
        pairs = []
        for entry in splits:
            name = split_of_file(str(entry))
            if name is None:
                hint = (
                    f"it is a split name: give its file in `{files_key}` (one file per split)"
                    if str(entry).strip().lower() in _BY_NAME
                    else f"it is neither a split name ({', '.join(split_names())}) nor a {'/'.join(SPLIT_FILE_EXTENSIONS)} "
                    "file named after one (ptb-test.json, ecgqa-test/test-00000-of-00001.parquet)"
                )
                raise ValueError(f"`{splits_key}`: cannot tell the split of {entry!r}: {hint}.")
            pairs.append((name, str(entry)))
    names = [name for name, _ in pairs]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"`{splits_key}` lists the split(s) {twice} twice.")
    return pairs
