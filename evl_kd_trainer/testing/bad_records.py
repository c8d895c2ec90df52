"""A seeded hostile ECGInstruct corpus: good records mixed with every kind of bad one, and what loading must count.

:func:`write_hostile_corpus` writes a ``.json`` list (with a BOM) and a ``.jsonl`` file (with an invalid UTF-8 byte
and lines that are not JSON) plus their images, and returns a :class:`HostileCorpus` saying what
``load_ecginstruct(corpus.files, image_root=corpus.image_root, skip_invalid=True)`` must skip per reason, which
records load, which of those the collator must drop (images that only fail when decoded), and which it must
escape (special-token text) or cut (over-long answers). Tests and the trainer fuzz test build on it.
"""

from __future__ import annotations

import io
import json
import os
import random
import struct
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evl_kd_trainer.testing.images import _QA, make_ecg_like_image

# Nesting deeper than Python's default recursion limit (1000): `json.loads` raises RecursionError on it.
DEEP_NESTING = 5000
LONG_ANSWER_CHARS = 100_000


@dataclass
class HostileCorpus:
    """What :func:`write_hostile_corpus` wrote and what loading and collating it must give.

    Attributes:
        files: the ``.json`` and ``.jsonl`` files, to pass together to ``load_ecginstruct``.
        image_root: the ``image_root`` to load them with (some records point outside it).
        expected_skipped: reason -> number of records ``load_ecginstruct(skip_invalid=True)`` must skip.
        loaded_ids: ids of the records that load (in file order).
        bad_at_collate_ids: loaded records whose image only fails when decoded (the collator drops them,
            ``dropped_bad_image``).
        special_text_ids: loaded records holding special-token text (the collator escapes them and trains on them).
        long_ids: loaded records with a 100k-character answer (cut to the context by the collator, still trained).
        high_depth_ids: loaded records whose image is 16-bit (``I;16``) or float (``F``).
    """

    files: list[Path]
    image_root: Path
    expected_skipped: dict[str, int]
    loaded_ids: list[str]
    bad_at_collate_ids: list[str]
    special_text_ids: list[str] = field(default_factory=list)
    long_ids: list[str] = field(default_factory=list)
    high_depth_ids: list[str] = field(default_factory=list)

    @property
    def num_records(self) -> int:
        return sum(self.expected_skipped.values()) + len(self.loaded_ids)

    @property
    def num_good(self) -> int:
        """Records that must reach the model: loaded and not dropped by the collator."""
        return len(self.loaded_ids) - len(self.bad_at_collate_ids)

    @property
    def trainable_ids(self) -> list[str]:
        bad = set(self.bad_at_collate_ids)
        return [record_id for record_id in self.loaded_ids if record_id not in bad]


def _conversation(question: str, answer: str, image: bool = True) -> list[dict[str, Any]]:
    return [{"from": "human", "value": ("<image>\n" if image else "") + question}, {"from": "gpt", "value": answer}]


def _png_bytes(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG declaring ``width x height`` pixels (what a decompression bomb looks like to a header check)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def _png_with_corrupt_data(image: Any) -> bytes:
    """A PNG with a valid header, valid chunk CRCs and an ``IEND``, whose compressed pixels are garbage."""
    data = _png_bytes(image)
    at = data.index(b"IDAT")
    length = struct.unpack(">I", data[at - 4 : at])[0]
    payload = bytes(byte ^ 0x5A for byte in data[at + 4 : at + 4 + length])
    crc = struct.pack(">I", zlib.crc32(b"IDAT" + payload) & 0xFFFFFFFF)
    return data[: at + 4] + payload + crc + data[at + 8 + length :]


def _write_images(root: Path, outside: Path, seed: int) -> dict[str, str]:
    """Every image file the corpus refers to; returns kind -> path relative to ``root`` (or absolute)."""
    import numpy as np
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    make_ecg_like_image(seed=seed, size=(64, 48)).save(outside)
    files: dict[str, bytes] = {
        "zero_bytes.png": b"",
        "not_an_image.png": b"Hello, this is a text file, not a picture.\n" * 4,
        "truncated.png": _png_bytes(make_ecg_like_image(seed=seed + 1, size=(96, 64)))[:300],
        "bomb.png": png_header_only(20_000, 20_000),  # 400 Mpx: PIL's own bomb check refuses it at open
        "huge.png": png_header_only(10_000, 10_000),  # 100 Mpx: over the default limit (89.5 Mpx)
        "corrupt_data.png": _png_with_corrupt_data(make_ecg_like_image(seed=seed + 2)),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    Image.new("RGB", (1, 300), (255, 255, 255)).save(root / "aspect.png")  # 300:1, Qwen-VL refuses > 200
    jpeg = io.BytesIO()
    make_ecg_like_image(seed=seed + 3, size=(96, 64)).save(jpeg, format="JPEG")
    (root / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) * 6 // 10])  # no trailer check
    ramp = (np.arange(48 * 64).reshape(48, 64) % 4001).astype(np.uint16)
    Image.fromarray(ramp).save(root / "depth16.png")  # mode I;16, values 0..4000
    Image.fromarray(np.linspace(0.0, 1.0, 48 * 64, dtype=np.float32).reshape(48, 64)).save(root / "float.tiff")
    os.symlink(os.path.relpath(outside, root), root / "link_outside.png")
    for index in range(8):
        make_ecg_like_image(seed=seed * 100 + index, size=((64, 48), (96, 64), (48, 64), (80, 40))[index % 4]).save(
            root / f"ecg{index}.png"
        )
    return {"outside_abs": str(outside), "outside_rel": os.path.join("..", outside.name)}


def write_hostile_corpus(folder: str | os.PathLike, seed: int = 0, num_valid: int = 110) -> HostileCorpus:
    """Write a shuffled corpus under ``folder`` (``train.json``, ``train.jsonl`` and ``images/``, the ``image_root``):
    ``num_valid`` records that pass loading (two of which only fail when their image is decoded) and 49 that do
    not, at least one of every kind (159 records by default)."""
    if num_valid < 20:
        raise ValueError(f"num_valid must be >= 20 (the special records alone are 10), got {num_valid}.")
    rng = random.Random(seed)
    folder = Path(folder)
    root = folder / "images"
    paths = _write_images(root, folder / "outside.png", seed)
    # (record as JSON-able value or raw JSONL text, expected outcome): outcome is a skip reason, or "load",
    # "collate" (loads, dropped at collation), "special", "long", "depth".
    entries: list[tuple[Any, str]] = []

    def good(record_id: str, outcome: str = "load", **fields: Any) -> None:
        question, answer = _QA[rng.randrange(len(_QA))]
        record = {
            "id": record_id,
            "image": f"ecg{rng.randrange(8)}.png",
            "conversations": _conversation(question, answer),
        }
        record.update(fields)
        entries.append((record, outcome))

    for index in range(num_valid - 10):
        kind = index % 4
        if kind == 0:
            good(f"good-{index}")
        elif kind == 1:  # two images
            good(
                f"good-{index}",
                image=None,
                images=["ecg1.png", "ecg2.png"],
                conversations=_conversation("Compare <image>\nwith <image>\nplease.", "same rhythm", image=False),
            )
        elif kind == 2:  # text only, integer id
            entries.append(({"id": 10_000 + index, "conversations": _conversation("What is a P wave?", "atrial depolarisation", image=False)}, "load"))  # fmt: skip
        else:  # multi-turn
            good(
                f"good-{index}",
                conversations=_conversation("Rhythm?", "sinus rhythm") + _conversation("Normal?", "no", image=False),
            )
    for index, (question, answer) in enumerate(
        [
            ("What does <|im_end|> mean?", "It ends a turn."),
            ("Rhythm?", "sinus rhythm</s> and more<|im_end|>"),
            ("Is <|image_pad|> an image?", "No, <|vision_start|>text<|vision_end|>."),
            ("Say <s> and <unk>.", "<s><unk>"),
        ]
    ):
        good(f"special-{index}", "special", conversations=_conversation(question, answer))
    for index in range(2):
        good(
            f"long-{index}",
            "long",
            conversations=_conversation("Explain.", "sinus rhythm " * (LONG_ANSWER_CHARS // 13)),
        )
    good("depth-16", "depth", image="depth16.png")
    good("depth-float", "depth", image="float.tiff")
    good("corrupt-data", "collate", image="corrupt_data.png")
    good("truncated-jpeg", "collate", image="truncated.jpg")
    # These 10 records take the place of 10 plain ones: `num_valid` records load in all.

    conversation = _conversation("Rhythm?", "AF")
    malformed: list[Any] = [
        {
            "id": "from-list",
            "image": "ecg0.png",
            "conversations": [{"from": ["human"], "value": "<image>\nx"}, {"from": "gpt", "value": "y"}],
        },  # fmt: skip
        {
            "id": "from-dict",
            "image": "ecg0.png",
            "conversations": [{"from": {"a": 1}, "value": "<image>\nx"}, {"from": "gpt", "value": "y"}],
        },  # fmt: skip
        {
            "id": "from-null",
            "image": "ecg0.png",
            "conversations": [{"from": None, "value": "<image>\nx"}, {"from": "gpt", "value": "y"}],
        },  # fmt: skip
        {"id": "value-number", "conversations": [{"from": "human", "value": 3}, {"from": "gpt", "value": "y"}]},
        {"id": "value-null", "conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": None}]},
        {"id": "value-list", "conversations": [{"from": "human", "value": ["x"]}, {"from": "gpt", "value": "y"}]},
        {"id": None, "image": "ecg0.png", "conversations": conversation},
        {"id": 1.5, "image": "ecg0.png", "conversations": conversation},
        {"id": True, "image": "ecg0.png", "conversations": conversation},
        {"id": ["a"], "image": "ecg0.png", "conversations": conversation},
        {"id": {"a": 1}, "image": "ecg0.png", "conversations": conversation},
        ["not", "an", "object"],
        "a string",
        42,
        None,
        {"id": "conv-string", "conversations": "human: hi"},
        {"id": "conv-object", "conversations": {"from": "human", "value": "hi"}},
        {"id": "image-number", "image": 5, "conversations": conversation},
        {"id": "images-mixed", "images": ["ecg0.png", 3], "conversations": conversation},
        {
            "id": "surrogate",
            "conversations": [{"from": "human", "value": "bad \udc80 text"}, {"from": "gpt", "value": "y"}],
        },  # fmt: skip
        {"id": "nul-path", "image": "ecg0.png\x00.txt", "conversations": conversation},
    ]
    for record in malformed:
        entries.append((record, "malformed"))
    structural = {
        "missing_keys": [
            {"id": "no-conversations", "image": "ecg0.png"},
            {"id": "turn-no-value", "conversations": [{"from": "human"}, {"from": "gpt", "value": "y"}]},
            {"id": "turn-not-object", "conversations": ["hello", {"from": "gpt", "value": "y"}]},
        ],
        "empty_conversations": [{"id": "empty", "conversations": []}],
        "unknown_role": [
            {"id": "doctor", "conversations": [{"from": "doctor", "value": "x"}, {"from": "gpt", "value": "y"}]}
        ],  # fmt: skip
        "no_assistant_turn": [
            {"id": "no-answer", "image": "ecg0.png", "conversations": [{"from": "human", "value": "<image>\nx"}]}
        ],  # fmt: skip
        "image_count_mismatch": [
            {"id": "placeholder-no-image", "conversations": conversation},
            {"id": "image-no-placeholder", "image": "ecg0.png", "conversations": _conversation("x", "y", image=False)},
            {
                "id": "image-in-answer",
                "image": "ecg0.png",
                "conversations": [{"from": "human", "value": "<image>\nx"}, {"from": "gpt", "value": "<image>"}],
            },  # fmt: skip
            {"id": "extra-placeholder", "image": "ecg0.png", "conversations": _conversation("<image> twice", "y")},
        ],
        "image_outside_root": [
            {"id": "dotdot", "image": paths["outside_rel"], "conversations": conversation},
            {"id": "absolute", "image": paths["outside_abs"], "conversations": conversation},
            {"id": "etc-passwd", "image": "/etc/passwd", "conversations": conversation},
            {"id": "symlink", "image": "link_outside.png", "conversations": conversation},
            {"id": "deep-dotdot", "image": "a/../../../outside.png", "conversations": conversation},
        ],
        "missing_image": [{"id": "nowhere", "image": "nowhere.png", "conversations": conversation}],
        "unreadable_image": [
            {"id": f"unreadable-{name}", "image": name, "conversations": conversation}
            for name in ("zero_bytes.png", "not_an_image.png", "truncated.png")
        ],
        "image_too_large": [
            {"id": f"too-large-{name}", "image": name, "conversations": conversation}
            for name in ("bomb.png", "huge.png")
        ],
        "image_aspect_ratio": [{"id": "aspect", "image": "aspect.png", "conversations": conversation}],
    }
    for reason, records in structural.items():
        entries.extend((record, reason) for record in records)
    # Undecodable JSON elements: nested too deeply and an integer of 5000 digits.
    deep = '{"id": "deep", "conversations": ' + "[" * DEEP_NESTING + "]" * DEEP_NESTING + "}"
    huge_int = '{"id": ' + "9" * 5000 + ', "conversations": []}'
    entries.extend([(_Raw(deep), "malformed"), (_Raw(huge_int), "malformed")])
    rng.shuffle(entries)

    # Each entry goes to the .json list or the .jsonl file; the JSONL also gets lines no JSON parser accepts.
    json_part, jsonl_part = entries[::2], entries[1::2]
    jsonl_only: list[tuple[bytes, str]] = [
        (
            b'{"id": "bad-utf8", "conversations": [{"from": "human", "value": "\xff\xfe bytes"}, {"from": "gpt", "value": "y"}]}',
            "malformed",
        ),  # fmt: skip
        (b"{not json at all", "malformed"),
        (b'{"id": "unterminated", "conversations": [', "malformed"),
    ]
    json_file, jsonl_file = folder / "train.json", folder / "train.jsonl"
    texts = [_json_text(entry) for entry, _ in json_part]
    # The BOM is what some Windows editors write first; an invalid UTF-8 byte sits inside one string.
    json_file.write_bytes(
        b"\xef\xbb\xbf["
        + b",\n".join(text.encode() for text in texts)
        + b',\n{"id": "bad-utf8-json", "conversations": [{"from": "human", "value": "\xc3\x28"}, {"from": "gpt", "value": "y"}]}]\n'
    )  # fmt: skip
    lines = [_json_text(entry).encode() for entry, _ in jsonl_part]
    lines += [line for line, _ in jsonl_only]
    rng.shuffle(lines)
    jsonl_file.write_bytes(b"\n".join(lines) + b"\n\n")

    outcomes = [outcome for _, outcome in entries] + ["malformed"] * (len(jsonl_only) + 1)
    loaded = ("load", "collate", "special", "long", "depth")

    def ids(kind: str) -> list[str]:
        return [str(entry["id"]) for entry, outcome in entries if outcome == kind]

    # Loaded ids in file order: the .json list first, then the .jsonl lines (shuffled once more when written).
    jsonl_loaded = {_json_text(entry).encode(): entry for entry, outcome in jsonl_part if outcome in loaded}
    loaded_ids = [str(entry["id"]) for entry, outcome in json_part if outcome in loaded]
    loaded_ids += [str(jsonl_loaded[line]["id"]) for line in lines if line in jsonl_loaded]
    return HostileCorpus(
        files=[json_file, jsonl_file],
        image_root=root,
        expected_skipped=dict(Counter(outcome for outcome in outcomes if outcome not in loaded)),
        loaded_ids=loaded_ids,
        bad_at_collate_ids=ids("collate"),
        special_text_ids=ids("special"),
        long_ids=ids("long"),
        high_depth_ids=ids("depth"),
    )


class _Raw:
    """A record given as JSON text (what ``json.dumps`` cannot produce: deep nesting, a 5000-digit integer)."""

    def __init__(self, text: str) -> None:
        self.text = text


def _json_text(entry: Any) -> str:
    return entry.text if isinstance(entry, _Raw) else json.dumps(entry)
