"""load_ecginstruct against hostile input: paths outside image_root, malformed values of every JSON type, invalid
UTF-8, deep nesting, BOMs, null ids; and the seeded hostile corpus with its expected per-reason counts."""

from __future__ import annotations

import json
import os

import pytest

from evl_kd_trainer.data.ecginstruct import iter_json_array, load_ecginstruct
from evl_kd_trainer.data.validation import InvalidRecordError
from evl_kd_trainer.scripts.args import DataArguments
from evl_kd_trainer.scripts.common import load_datasets
from evl_kd_trainer.testing import make_ecg_like_image
from evl_kd_trainer.testing.bad_records import write_hostile_corpus

CONVERSATION = [{"from": "human", "value": "<image>\nRhythm?"}, {"from": "gpt", "value": "AF"}]
GOOD = {"id": "good", "image": "ecg.png", "conversations": CONVERSATION}


@pytest.fixture
def layout(tmp_path):
    """``tmp_path/root`` (the image_root, with ecg.png) and a real image outside it, ``tmp_path/secret.png``."""
    root = tmp_path / "root"
    root.mkdir()
    make_ecg_like_image(0).save(root / "ecg.png")
    make_ecg_like_image(1).save(tmp_path / "secret.png")
    return root


def _write(path, records):
    path.write_text(json.dumps(records))
    return path


def _record(record_id, image):
    return {"id": record_id, "image": image, "conversations": CONVERSATION}


# --- 3. paths ------------------------------------------------------------------------------------------------------


def test_paths_outside_image_root_are_refused_naming_the_path(layout, tmp_path):
    os.symlink(tmp_path / "secret.png", layout / "link.png")
    (layout / "sub").mkdir()
    os.symlink(layout / "ecg.png", layout / "sub" / "inside_link.png")  # a link that stays inside is fine
    cases = {
        "dotdot": "../secret.png",
        "absolute": str(tmp_path / "secret.png"),
        "etc-passwd": "/etc/passwd",
        "symlink": "link.png",
        "nested-dotdot": "sub/../../secret.png",
    }
    for record_id, path in cases.items():
        file = _write(tmp_path / f"{record_id}.json", [GOOD, _record(record_id, path)])
        # "decode" would read the file: the path is refused before any check opens it.
        with pytest.raises(InvalidRecordError) as caught:
            load_ecginstruct(file, image_root=layout, check_images="decode")
        assert caught.value.reason == "image_outside_root", record_id
        message = str(caught.value)
        assert path in message and repr(record_id) in message and str(file) in message
        assert "allow_paths_outside_root=True" in message

    records = [GOOD, *(_record(i, p) for i, p in cases.items()), _record("inside-link", "sub/inside_link.png")]
    file = _write(tmp_path / "all.json", records)
    dataset, report = load_ecginstruct(file, image_root=layout, skip_invalid=True, return_report=True)
    assert dataset["id"] == ["good", "inside-link"]
    assert dict(report.skipped) == {"image_outside_root": 5}
    # The stored path is the resolved one: what was checked is what will be read.
    assert dataset[1]["images"][0]["path"] == os.path.realpath(layout / "ecg.png")


def test_allow_paths_outside_root_reads_them(layout, tmp_path):
    os.symlink(tmp_path / "secret.png", layout / "link.png")
    records = [GOOD, _record("dotdot", "../secret.png"), _record("abs", str(tmp_path / "secret.png"))]
    records.append(_record("link", "link.png"))
    file = _write(tmp_path / "train.json", records)
    dataset = load_ecginstruct(file, image_root=layout, allow_paths_outside_root=True)
    secret = os.path.realpath(tmp_path / "secret.png")
    assert [row["images"][0]["path"] for row in dataset][1:] == [secret] * 3


def test_trl_records_are_confined_too(layout, tmp_path):
    record = {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], "images": ["../secret.png"]}  # fmt: skip
    file = _write(tmp_path / "trl.json", [record])
    with pytest.raises(InvalidRecordError, match=r"\.\./secret\.png resolves to .*outside image_root") as caught:
        load_ecginstruct(file, image_root=layout)
    assert caught.value.reason == "image_outside_root"


def test_data_arguments_carry_the_path_and_image_options(layout, tmp_path):
    file = _write(tmp_path / "train.json", [GOOD, _record("abs", str(tmp_path / "secret.png"))])
    with pytest.raises(InvalidRecordError, match="absolute image path"):
        load_datasets(DataArguments(dataset_path=str(file), image_root=str(layout)))
    train, _ = load_datasets(
        DataArguments(dataset_path=str(file), image_root=str(layout), allow_paths_outside_root=True)
    )
    assert train["id"] == ["good", "abs"]
    (layout / "fake.png").write_bytes(b"not an image")
    file = _write(tmp_path / "fake.json", [GOOD, _record("fake", "fake.png")])
    with pytest.raises(InvalidRecordError, match="cannot decode image"):  # the default check: header
        load_datasets(DataArguments(dataset_path=str(file), image_root=str(layout)))
    args = DataArguments(dataset_path=str(file), image_root=str(layout), check_images="exists")
    assert load_datasets(args)[0]["id"] == ["good", "fake"]
    for name, value in (("check_images", "sometimes"), ("on_bad_image", "ignore"), ("special_token_text", "keep")):
        with pytest.raises(ValueError, match=f"`{name}` must be one of"):
            DataArguments(dataset_path=str(file), **{name: value})


# --- 5. malformed values -------------------------------------------------------------------------------------------

MALFORMED = {
    "from-list": {"id": "r", "conversations": [{"from": ["human"], "value": "x"}, {"from": "gpt", "value": "y"}]},
    "from-dict": {
        "id": "r",
        "conversations": [{"from": {"who": "human"}, "value": "x"}, {"from": "gpt", "value": "y"}],
    },  # fmt: skip
    "value-dict": {
        "id": "r",
        "conversations": [{"from": "human", "value": {"t": "x"}}, {"from": "gpt", "value": "y"}],
    },  # fmt: skip
    "id-null": {"id": None, "conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}]},
    "id-float": {"id": 2.5, "conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}]},
    "id-list": {"id": [1], "conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}]},
    "surrogate": {"id": "r", "conversations": [{"from": "human", "value": "a\udc80b"}, {"from": "gpt", "value": "y"}]},
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_values_raise_naming_file_and_record_or_count(tmp_path, case):
    file = _write(tmp_path / "train.json", [GOOD, MALFORMED[case]])
    root = tmp_path
    make_ecg_like_image(0).save(tmp_path / "ecg.png")
    with pytest.raises(InvalidRecordError) as caught:  # never a bare TypeError / UnicodeError
        load_ecginstruct(file, image_root=root)
    assert caught.value.reason == "malformed"
    label = "'r'" if MALFORMED[case]["id"] == "r" else "#1 (invalid id)"
    assert f"{file}: record {label}" in str(caught.value)
    dataset, report = load_ecginstruct(file, image_root=root, skip_invalid=True, return_report=True)
    assert dataset["id"] == ["good"] and dict(report.skipped) == {"malformed": 1}


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": 5}, {"role": "assistant", "content": "y"}],
        [{"role": "user", "content": ["text"]}, {"role": "assistant", "content": "y"}],
        [{"role": "user", "content": [{"type": "text", "text": ["x"]}]}, {"role": "assistant", "content": "y"}],
        [{"role": "user", "content": [{"type": ["image"]}]}, {"role": "assistant", "content": "y"}],
    ],
    ids=["content-number", "part-string", "text-list", "type-list"],
)
def test_malformed_trl_contents(tmp_path, messages):
    good = {"id": "good", "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}
    file = _write(tmp_path / "trl.json", [good, {"id": "bad", "messages": messages}])
    with pytest.raises(InvalidRecordError, match=rf"{file}: record 'bad': message 0") as caught:
        load_ecginstruct(file)
    assert caught.value.reason == "malformed"
    assert load_ecginstruct(file, skip_invalid=True)["id"] == ["good"]


def test_id_null_is_not_the_string_none(tmp_path):
    file = _write(tmp_path / "train.json", [{"id": None, "conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}]}])  # fmt: skip
    with pytest.raises(InvalidRecordError, match=r"'id' must be a string or an integer, got null"):
        load_ecginstruct(file)
    ok = _write(tmp_path / "ok.json", [{"id": 7, "conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}]}])  # fmt: skip
    assert load_ecginstruct(ok)["id"] == ["7"]


def _line(record_id):
    return json.dumps({"id": record_id, "conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}]})  # fmt: skip


def test_invalid_utf8_in_jsonl_is_one_bad_record_naming_its_line(tmp_path):
    file = tmp_path / "train.jsonl"
    bad = b'{"id": "bad", "conversations": [{"from": "human", "value": "\xff\xfe"}, {"from": "gpt", "value": "y"}]}'
    file.write_bytes(_line("a").encode() + b"\n" + bad + b"\n" + _line("b").encode() + b"\n")
    with pytest.raises(InvalidRecordError, match=r"train\.jsonl: record 'bad': invalid UTF-8 \(bytes b'\\xff\\xfe'"):
        load_ecginstruct(file)
    dataset, report = load_ecginstruct(file, skip_invalid=True, return_report=True)
    assert dataset["id"] == ["a", "b"] and dict(report.skipped) == {"malformed": 1}
    # The same byte inside a .json list.
    listed = tmp_path / "train.json"
    listed.write_bytes(b"[" + _line("a").encode() + b", " + bad + b"]")
    with pytest.raises(InvalidRecordError, match=r"train\.json: record 'bad': invalid UTF-8"):
        load_ecginstruct(listed)
    assert load_ecginstruct(listed, skip_invalid=True)["id"] == ["a"]


def test_deep_nesting_and_huge_integers_are_bad_records_not_crashes(tmp_path):
    deep = '{"id": "deep", "conversations": ' + "[" * 5000 + "]" * 5000 + "}"
    huge = '{"id": ' + "9" * 5000 + ', "conversations": []}'
    lines = tmp_path / "train.jsonl"
    lines.write_text("\n".join([_line("a"), deep, huge, _line("b")]) + "\n")
    with pytest.raises(
        InvalidRecordError, match=r"train\.jsonl: record #1 \(line 2\): invalid JSON: nested too deeply"
    ):
        load_ecginstruct(lines)
    dataset, report = load_ecginstruct(lines, skip_invalid=True, return_report=True)
    assert dataset["id"] == ["a", "b"] and dict(report.skipped) == {"malformed": 2}

    listed = tmp_path / "train.json"
    text = "[" + ", ".join([_line("a"), deep, huge, _line("b")]) + "]"
    listed.write_text(text)
    offset = text.index(deep)
    with pytest.raises(InvalidRecordError, match=rf"record #1 \(no id\): element at character {offset} .*nested too"):
        load_ecginstruct(listed)
    for chunk in (7, 1 << 20):  # the element is skipped by bracket counting, across chunk boundaries too
        with pytest.raises(ValueError, match=rf"train\.json: element at character {offset} cannot be decoded"):
            list(iter_json_array(str(listed), chunk_chars=chunk))
    dataset, report = load_ecginstruct(listed, skip_invalid=True, return_report=True)
    assert dataset["id"] == ["a", "b"] and dict(report.skipped) == {"malformed": 2}


def test_a_bom_is_not_an_error(tmp_path):
    listed = tmp_path / "train.json"
    listed.write_bytes(b"\xef\xbb\xbf[" + _line("a").encode() + b"]")
    assert load_ecginstruct(listed)["id"] == ["a"]
    lines = tmp_path / "train.jsonl"
    lines.write_bytes(b"\xef\xbb\xbf" + _line("a").encode() + b"\n" + _line("b").encode())
    assert load_ecginstruct(lines)["id"] == ["a", "b"]
    # A .json holding JSON lines still gets the hint; anything else says what it found.
    (tmp_path / "lines.json").write_text(_line("a") + "\n" + _line("b"))
    with pytest.raises(ValueError, match="JSON lines need a .jsonl name"):
        load_ecginstruct(tmp_path / "lines.json")
    (tmp_path / "text.json").write_text("hello")
    with pytest.raises(ValueError, match="expected a JSON list of records, got 'h'"):
        load_ecginstruct(tmp_path / "text.json")


# --- the hostile corpus ------------------------------------------------------------------------------------------


def test_hostile_corpus_loads_with_exactly_the_expected_counts(tmp_path):
    corpus = write_hostile_corpus(tmp_path, seed=0)
    assert corpus.num_records >= 150
    assert set(corpus.expected_skipped) == {
        "malformed", "missing_keys", "empty_conversations", "unknown_role", "no_assistant_turn",
        "image_count_mismatch", "image_outside_root", "missing_image", "unreadable_image", "image_too_large",
        "image_aspect_ratio",
    }  # fmt: skip
    dataset, report = load_ecginstruct(
        corpus.files, image_root=corpus.image_root, skip_invalid=True, return_report=True
    )
    assert dict(report.skipped) == corpus.expected_skipped
    assert (report.num_read, report.num_loaded) == (corpus.num_records, len(corpus.loaded_ids))
    assert dataset["id"] == corpus.loaded_ids
    assert corpus.num_good == len(corpus.loaded_ids) - 2 and set(corpus.trainable_ids) <= set(corpus.loaded_ids)
    # Streaming checks the same records as they stream.
    stream, stream_report = load_ecginstruct(
        corpus.files, image_root=corpus.image_root, skip_invalid=True, streaming=True, return_report=True
    )
    assert [row["id"] for row in stream] == corpus.loaded_ids
    assert dict(stream_report.skipped) == corpus.expected_skipped


def test_hostile_corpus_is_seeded(tmp_path):
    first = write_hostile_corpus(tmp_path / "a", seed=3)
    again = write_hostile_corpus(tmp_path / "b", seed=3)
    other = write_hostile_corpus(tmp_path / "c", seed=4)
    assert first.loaded_ids == again.loaded_ids and first.expected_skipped == again.expected_skipped
    text_a, text_b = ((tmp_path / n / "train.jsonl").read_bytes() for n in ("a", "b"))
    assert text_a.replace(str(tmp_path / "a").encode(), b"") == text_b.replace(str(tmp_path / "b").encode(), b"")
    assert other.loaded_ids != first.loaded_ids
