"""A synthetic ECGInstruct-style dataset for demos and tests: simulated 12-lead ECGs, rendered, with questions.

The classes differ in what a picture shows at a glance (beat spacing, regularity, P waves), so a tiny
vision-language model trained for minutes can learn them: sinus bradycardia (40-48 bpm), normal
sinus rhythm (66-82), sinus tachycardia (128-150) and atrial fibrillation (90-115 bpm mean,
irregular RR, no P waves). A fifth class, atrial flutter with 2:1 block (130-150 bpm, regular), takes a
closer look: it beats like sinus tachycardia and differs only by the sawtooth baseline that replaces the P
waves. Records vary within a class (rate, axes, amplitudes, baseline wander, noise; see
:mod:`evl_kd_trainer.ecg.simulate`).

Output, under ``out_dir``::

    train.json      ECGInstruct records: per picture one closed-ended and/or one multiple-choice record
    test.json       ECG-Bench-style split: one multiple-choice record per picture, gold answer = letter
    manifest.json   task name "synthetic", classes, counts, seed, generator and render settings, labels
    images/{train,test}/*.png

Every picture has its own random stream (``seed``, split, index), so the output is identical for a
seed whatever the order or subset of pictures made.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from evl_kd_trainer.ecg.augment import AugmentConfig, sample_augmentation
from evl_kd_trainer.ecg.layouts import get_layout
from evl_kd_trainer.ecg.records import (
    RHYTHM_CLOSED_QUESTIONS,
    RHYTHM_MCQ_QUESTION,
    make_record,
    multiple_choice,
)
from evl_kd_trainer.ecg.render import PaperStyle, render_ecg
from evl_kd_trainer.ecg.simulate import DEFAULT_CLASSES, get_rhythm_class, simulate_ecg

TASK_NAME = "synthetic"
QUESTION_TYPES = ("closed", "mcq")
_SPLIT_STREAM = {"train": 0, "test": 1}


def make_synthetic_dataset(
    out_dir: str | os.PathLike,
    n_train: int = 400,
    n_test: int = 100,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    layout: str = "3x4",
    image_size: tuple[int, int] | None = None,
    dpi: float = 100.0,
    augment_prob: float = 0.0,
    question_types: Sequence[str] = QUESTION_TYPES,
    *,
    shuffle_options: bool = False,
    augment_test: bool = False,
    duration: float = 10.0,
    sampling_rate: float = 250.0,
    style: PaperStyle | None = None,
) -> dict[str, str]:
    """Simulate, render and write the dataset; returns the paths (``train``, ``test``, ``manifest``, ``images``).

    Args:
        n_train, n_test: number of pictures per split (classes balanced, order shuffled).
        classes: rhythm codes among ``SB``, ``NSR``, ``ST``, ``AF``, ``AFL`` (default: the first four).
        layout: ``3x4``, ``6x2``, ``12x1`` or ``1x1`` (lead II alone: the one to use at ~112 px).
        image_size: ``(width, height)`` in pixels (stretched to fill), else the page at ``dpi``.
        augment_prob: chance that a training picture is augmented (rotation, noise, tint, no grid).
        question_types: for training records, ``"closed"`` (answer = rhythm name) and/or ``"mcq"``
            (answer = letter). The test split is always multiple choice.
        shuffle_options: shuffle the multiple-choice options per record. Off by default: with a fixed
            order a letter always means the same class, which a model trained for minutes can learn;
            on, the model must also read the options.
        augment_test: augment test pictures too (with ``augment_prob``).
        duration, sampling_rate: simulated record length (s) and rate (Hz).
        style: colours and stroke widths of the page (default :data:`~evl_kd_trainer.ecg.render.DEFAULT_STYLE`);
            the demo draws a thicker trace so that beats survive the tiny models' downsampling.
    """
    codes = tuple(classes) if classes is not None else DEFAULT_CLASSES
    rhythms = [get_rhythm_class(code) for code in codes]
    if len(set(codes)) != len(codes) or len(codes) < 2:
        raise ValueError(f"Need at least two distinct classes, got {list(codes)}.")
    unknown_types = [kind for kind in question_types if kind not in QUESTION_TYPES]
    if unknown_types or not question_types:
        raise ValueError(f"question_types must be a non-empty subset of {QUESTION_TYPES}, got {list(question_types)}.")
    if n_train < 0 or n_test < 0 or n_train + n_test == 0:
        raise ValueError(f"n_train and n_test must be >= 0 and not both 0, got {n_train}, {n_test}.")
    get_layout(layout)
    augment = AugmentConfig(prob=augment_prob) if augment_prob > 0 else None

    out_dir = os.fspath(out_dir)
    render_options: dict[str, Any] = {"layout": layout, "dpi": dpi, "size": image_size, "duration": duration}
    if style is not None:
        render_options["style"] = style
    names = [rhythm.name for rhythm in rhythms]
    started = time.perf_counter()
    records: dict[str, list[dict[str, Any]]] = {"train": [], "test": []}
    labels: dict[str, dict[str, str]] = {"train": {}, "test": {}}
    augmentations: dict[str, dict[str, Any]] = {}
    for split, count in (("train", n_train), ("test", n_test)):
        os.makedirs(os.path.join(out_dir, "images", split), exist_ok=True)
        order = np.random.default_rng([seed, _SPLIT_STREAM[split], 0]).permutation(count) % len(codes)
        for index in range(count):
            rng = np.random.default_rng([seed, _SPLIT_STREAM[split], 1, index])
            rhythm = rhythms[int(order[index])]
            ecg = simulate_ecg(rhythm, rng, duration=duration, sampling_rate=sampling_rate)
            augmentation = None
            if augment is not None and (split == "train" or augment_test):
                augmentation = sample_augmentation(augment, rng)
            image = render_ecg(ecg.signal, ecg.sampling_rate, ecg.lead_names, augment=augmentation, **render_options)
            image_id = f"{TASK_NAME}-{split}-{index:05d}"
            relative = f"images/{split}/{image_id}.png"
            image.save(os.path.join(out_dir, relative), compress_level=1)
            labels[split][image_id] = rhythm.code
            if augmentation is not None and not augmentation.is_identity:
                augmentations[image_id] = augmentation.describe()
            records[split].extend(
                _records_for(split, image_id, relative, rhythm.name, names, question_types, shuffle_options, rng)
            )
    elapsed = time.perf_counter() - started

    paths = {
        "train": os.path.join(out_dir, "train.json"),
        "test": os.path.join(out_dir, "test.json"),
        "manifest": os.path.join(out_dir, "manifest.json"),
        "images": os.path.join(out_dir, "images"),
    }
    for split in ("train", "test"):
        _write_json(paths[split], records[split])
    manifest = {
        "task": TASK_NAME,
        "splits": {"train": "train.json", "test": "test.json"},
        "classes": [{"code": r.code, "name": r.name, "heart_rate_bpm": list(r.heart_rate)} for r in rhythms],
        "options": names,
        "shuffle_options": shuffle_options,
        "question_types": list(question_types),
        "counts": {
            split: {
                "images": len(labels[split]),
                "records": len(records[split]),
                "per_class": dict(Counter(labels[split].values())),
                "augmented": sum(name.startswith(f"{TASK_NAME}-{split}-") for name in augmentations),
            }
            for split in ("train", "test")
        },
        "seed": seed,
        "generator": {
            "name": "evl_kd_trainer.ecg.simulate (parametric Gaussian-wave 12-lead model)",
            "duration_s": duration,
            "sampling_rate_hz": sampling_rate,
        },
        "render": {
            "layout": layout,
            "dpi": None if image_size else dpi,
            "image_size": list(image_size) if image_size else None,
            "augment": asdict(augment) if augment else None,
            "augment_test": augment_test,
        },
        "labels": labels,
        "augmentations": augmentations,
        "seconds": round(elapsed, 2),
    }
    _write_json(paths["manifest"], manifest)
    return paths


def write_train_subset(out_dir: str | os.PathLike, n_images: int, name: str = "train_subset.json") -> str:
    """Write the training records of a smaller labelled budget: the first ``n_images / k`` pictures of each of the
    ``k`` classes of a dataset written by :func:`make_synthetic_dataset` in ``out_dir``; returns the file's path.

    The demo trains its teacher on the whole training split and its student on such a subset (as a large teacher
    model is trained on more data than the student distilled from it). Both questions of a picture stay together.
    """
    manifest = _read_json(os.path.join(out_dir, "manifest.json"))
    codes = [entry["code"] for entry in manifest["classes"]]
    labels = manifest["labels"]["train"]
    if n_images < len(codes) or n_images % len(codes):
        raise ValueError(f"n_images must be a positive multiple of the {len(codes)} classes, got {n_images}.")
    per_class = n_images // len(codes)
    available = Counter(labels.values())
    short = {code: available[code] for code in codes if available[code] < per_class}
    if short:
        raise ValueError(f"The training split has fewer than {per_class} pictures of {short} in {out_dir}.")
    kept: set[str] = set()
    taken: Counter[str] = Counter()
    for image_id in sorted(labels):  # ids are zero-padded: sorted = generation order
        if taken[labels[image_id]] < per_class:
            kept.add(image_id)
            taken[labels[image_id]] += 1
    records = _read_json(os.path.join(out_dir, manifest["splits"]["train"]))
    subset = [record for record in records if os.path.splitext(os.path.basename(record["image"]))[0] in kept]
    path = os.path.join(out_dir, name)
    _write_json(path, subset)
    return path


def _records_for(
    split: str,
    image_id: str,
    image: str,
    answer: str,
    names: list[str],
    question_types: Sequence[str],
    shuffle_options: bool,
    rng: np.random.Generator,
) -> list[dict[str, Any]]:
    if split == "test":
        question, letter = multiple_choice(RHYTHM_MCQ_QUESTION, names, answer, rng if shuffle_options else None)
        return [make_record(image_id, image, question, letter)]
    out = []
    for kind in question_types:
        if kind == "closed":
            question = RHYTHM_CLOSED_QUESTIONS[int(rng.integers(len(RHYTHM_CLOSED_QUESTIONS)))]
            out.append(make_record(f"{image_id}-closed", image, question, answer))
        else:
            question, letter = multiple_choice(RHYTHM_MCQ_QUESTION, names, answer, rng if shuffle_options else None)
            out.append(make_record(f"{image_id}-mcq", image, question, letter))
    return out


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _write_json(path: str, data: Any) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1)
    os.replace(tmp, path)
