"""Synthetic ECG-like pictures and a tiny TRL-format VLM dataset for tests and demos.

The pictures only imitate what matters to the pipeline (an RGB image of a given size: red grid, black
trace, like ECGInstruct's renderings); no real ECG signal is involved.
"""

from __future__ import annotations

import math
import random
from typing import Any

from PIL import Image, ImageDraw

# (question, answer) pairs in the style of ECGInstruct; answers are short so tiny batches stay small.
_QA: tuple[tuple[str, str], ...] = (
    ("What is the rhythm of this ECG?", "sinus rhythm"),
    ("Is this ECG normal or abnormal?", "abnormal ECG"),
    ("Which rhythm is shown? Options: A. sinus rhythm B. bradycardia C. tachycardia D. atrial fibrillation", "C"),
    ("What is the heart rate?", "The heart rate is 72 bpm."),
    ("Which leads show ST elevation?", "ST elevation in II, III and aVF."),
    ("Please interpret this 12-lead electrocardiogram image.", "sinus bradycardia, first degree AV block"),
    ("Is there atrial fibrillation?", "Yes, atrial fibrillation."),
    ("Does this ECG show a bundle branch block?", "right bundle branch block"),
)


def make_ecg_like_image(seed: int = 0, size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A small RGB picture ``size = (W, H)``: pale background, red grid, black beat-like trace.

    Deterministic in ``seed`` (heart rate, amplitude and phase vary with it).
    """
    width, height = size
    rng = random.Random(seed)
    image = Image.new("RGB", (width, height), (255, 244, 244))
    draw = ImageDraw.Draw(image)
    step = max(4, min(width, height) // 8)
    for x in range(0, width, step):
        draw.line([(x, 0), (x, height - 1)], fill=(240, 120, 120))
    for y in range(0, height, step):
        draw.line([(0, y), (width - 1, y)], fill=(240, 120, 120))
    period = rng.uniform(0.25, 0.5) * width
    amplitude = rng.uniform(0.25, 0.4) * height
    phase = rng.uniform(0.0, period)
    baseline = height * 0.6
    points = []
    for x in range(width):
        t = ((x + phase) % period) / period
        # A narrow spike (QRS) plus a gentle bump (T wave) on each beat.
        y = amplitude * math.exp(-(((t - 0.3) / 0.03) ** 2)) + 0.25 * amplitude * math.exp(-(((t - 0.6) / 0.08) ** 2))
        points.append((x, baseline - y))
    draw.line(points, fill=(0, 0, 0), width=1)
    return image


def make_tiny_vlm_dataset(n: int = 8, seed: int = 0, sizes: tuple[tuple[int, int], ...] | None = None) -> Any:
    """A ``datasets.Dataset`` of ``n`` one-image ECG Q&A samples in TRL's conversational VLM format.

    Columns: ``messages`` (user turn ``[{"type": "image"}, {"type": "text", "text": q}]``, assistant
    turn ``[{"type": "text", "text": a}]``) and ``images`` (a list with one PIL image). Image sizes
    cycle through ``sizes`` (default: a few small landscape/portrait sizes) so token counts differ.
    """
    from datasets import Dataset  # heavy import, only needed here

    sizes = sizes or ((64, 48), (96, 64), (48, 64), (80, 40))
    rows: dict[str, list[Any]] = {"messages": [], "images": []}
    for i in range(n):
        question, answer = _QA[(seed + i) % len(_QA)]
        rows["messages"].append(
            [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
                {"role": "assistant", "content": [{"type": "text", "text": answer}]},
            ]
        )
        rows["images"].append([make_ecg_like_image(seed=seed * 1000 + i, size=sizes[i % len(sizes)])])
    return Dataset.from_dict(rows)
