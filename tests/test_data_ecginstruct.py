"""load_ecginstruct: LLaVA JSON/JSONL -> TRL messages + lazy images, passthrough, and every bad-input case."""

from __future__ import annotations

import json
import logging

import datasets
import pytest
from PIL import Image

from evl_kd_trainer.data.ecginstruct import load_ecginstruct
from evl_kd_trainer.data.validation import InvalidRecordError
from evl_kd_trainer.testing import make_ecg_like_image

MULTI_TURN = {
    "id": "ptbxl-1",
    "image": "ecg/ptbxl-1-0.png",
    "conversations": [
        {"from": "human", "value": "<image>\nWhat is the rhythm?"},
        {"from": "gpt", "value": "sinus rhythm"},
        {"from": "human", "value": "Is it normal?"},
        {"from": "gpt", "value": "abnormal ECG"},
    ],
}
TEXT_ONLY = {"id": 7, "conversations": [{"from": "human", "value": "What is a P wave?"}, {"from": "gpt", "value": "atrial depolarisation"}]}  # fmt: skip
TWO_IMAGES = {
    "id": "pair",
    "images": ["ecg/a.png", "ecg/b.png"],
    "conversations": [
        {"from": "human", "value": "Compare <image>\nwith <image>\nplease."},
        {"from": "gpt", "value": "same"},
    ],
}


def _user(*parts):
    return {"role": "user", "content": list(parts)}


def _text(text):
    return {"type": "text", "text": text}


IMAGE = {"type": "image", "text": None}


@pytest.fixture
def data_dir(tmp_path):
    (tmp_path / "ecg").mkdir()
    for seed, name in enumerate(("ptbxl-1-0.png", "a.png", "b.png")):
        make_ecg_like_image(seed).save(tmp_path / "ecg" / name)
    (tmp_path / "ecg" / "broken.png").write_bytes(b"this is not a png")
    return tmp_path


def _write_json(path, records):
    path.write_text(json.dumps(records))
    return path


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def test_json_records_become_trl_messages_with_lazy_image_paths(data_dir):
    file = _write_json(data_dir / "train.json", [MULTI_TURN, TEXT_ONLY, TWO_IMAGES])
    dataset = load_ecginstruct(file)

    assert isinstance(dataset, datasets.Dataset)
    assert dataset.features["images"] == datasets.List(datasets.Image(decode=False))
    first = dataset[0]
    assert first["id"] == "ptbxl-1"
    assert first["messages"] == [
        _user(IMAGE, _text("What is the rhythm?")),
        {"role": "assistant", "content": [_text("sinus rhythm")]},
        _user(_text("Is it normal?")),
        {"role": "assistant", "content": [_text("abnormal ECG")]},
    ]
    # Paths resolved against the JSON's folder, not opened: no bytes are read.
    assert first["images"] == [{"path": str(data_dir / "ecg" / "ptbxl-1-0.png"), "bytes": None}]
    assert dataset[1]["id"] == "7" and dataset[1]["images"] == []
    # Each image part sits where its placeholder was; the "\n" after <image> is gone.
    assert dataset[2]["messages"][0] == _user(_text("Compare"), IMAGE, _text("with"), IMAGE, _text("please."))
    assert [image["path"] for image in dataset[2]["images"]] == [str(data_dir / "ecg" / n) for n in ("a.png", "b.png")]


def test_jsonl_list_of_files_and_image_root(data_dir, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("json")
    json_file = _write_json(elsewhere / "part1.json", [MULTI_TURN])
    jsonl_file = _write_jsonl(elsewhere / "part2.jsonl", [TEXT_ONLY, TWO_IMAGES])
    dataset = load_ecginstruct([json_file, jsonl_file], image_root=data_dir)
    assert dataset["id"] == ["ptbxl-1", "7", "pair"]
    assert dataset[0]["images"][0]["path"] == str(data_dir / "ecg" / "ptbxl-1-0.png")

    # The same records as JSONL load to the same rows.
    same = load_ecginstruct(_write_jsonl(data_dir / "all.jsonl", [MULTI_TURN, TEXT_ONLY, TWO_IMAGES]))
    assert same.to_list() == dataset.to_list()


def test_streaming_gives_an_iterable_dataset_with_the_same_first_record(data_dir):
    file = _write_jsonl(data_dir / "train.jsonl", [MULTI_TURN, TEXT_ONLY])
    stream, report = load_ecginstruct(file, streaming=True, return_report=True)
    assert isinstance(stream, datasets.IterableDataset)
    assert next(iter(stream)) == load_ecginstruct(file)[0]
    assert len(list(stream)) == 2 and report.num_loaded == 2


def test_decode_images_true_gives_pil_images(data_dir):
    dataset = load_ecginstruct(_write_json(data_dir / "train.json", [MULTI_TURN]), decode_images=True)
    image = dataset[0]["images"][0]
    assert isinstance(image, Image.Image) and image.size == (64, 48)


def test_trl_format_passes_through(data_dir):
    trl = datasets.Dataset.from_dict({"messages": [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]]})  # fmt: skip
    assert load_ecginstruct(trl) is trl
    assert isinstance(load_ecginstruct(trl, streaming=True), datasets.IterableDataset)
    with pytest.raises(ValueError, match="'messages' column"):
        load_ecginstruct(datasets.Dataset.from_dict({"text": ["x"]}))

    record = {"messages": [{"role": "user", "content": "Rhythm?"}, {"role": "assistant", "content": "AF"}], "images": ["ecg/a.png"]}  # fmt: skip
    loaded = load_ecginstruct(_write_json(data_dir / "trl.json", [record]))
    assert loaded[0]["messages"] == record["messages"]  # kept as they are (string contents)
    assert loaded[0]["images"] == [{"path": str(data_dir / "ecg" / "a.png"), "bytes": None}]


def _with(**changes):
    record = json.loads(json.dumps(MULTI_TURN))
    record.update(changes)
    return record


BAD_RECORDS = {
    "missing_image": _with(id="bad-img", image="ecg/nowhere.png"),
    "no_assistant_turn": _with(id="bad-noans", conversations=[{"from": "human", "value": "<image>\nRhythm?"}]),
    "image_count_mismatch": _with(
        id="bad-count", conversations=[{"from": "human", "value": "Rhythm?"}, {"from": "gpt", "value": "AF"}]
    ),  # fmt: skip
    "empty_conversations": _with(id="bad-empty", conversations=[]),
    "unknown_role": _with(
        id="bad-role", conversations=[{"from": "doctor", "value": "<image>\nx"}, {"from": "gpt", "value": "y"}]
    ),  # fmt: skip
    "missing_keys": {"id": "bad-keys", "image": "ecg/a.png"},
}


@pytest.mark.parametrize("reason", sorted(BAD_RECORDS))
def test_each_bad_record_raises_naming_id_and_file(data_dir, reason):
    record = BAD_RECORDS[reason]
    file = _write_json(data_dir / "train.json", [MULTI_TURN, record])
    with pytest.raises(InvalidRecordError) as caught:
        load_ecginstruct(file)
    assert caught.value.reason == reason
    message = str(caught.value)
    assert repr(record["id"]) in message and str(file) in message
    if reason == "missing_image":
        assert str(data_dir / "ecg" / "nowhere.png") in message


def test_skip_invalid_counts_each_reason_and_warns(data_dir, caplog):
    file = _write_json(data_dir / "train.json", [MULTI_TURN, *BAD_RECORDS.values(), TEXT_ONLY])
    with caplog.at_level(logging.WARNING):
        dataset, report = load_ecginstruct(file, skip_invalid=True, return_report=True)
    assert dataset["id"] == ["ptbxl-1", "7"]
    assert dict(report.skipped) == dict.fromkeys(BAD_RECORDS, 1)
    assert (report.num_read, report.num_loaded, report.num_skipped) == (8, 2, 6)
    assert "skipped 6" in caplog.text and "missing_image: 1" in caplog.text
    assert dataset.info.description == report.summary()


def test_skip_invalid_with_nothing_left_raises(data_dir):
    file = _write_json(data_dir / "train.json", [BAD_RECORDS["missing_image"]])
    with pytest.raises(ValueError, match="No valid record"):
        load_ecginstruct(file, skip_invalid=True)


def test_check_images_modes(data_dir):
    broken = _with(id="broken", image="ecg/broken.png")
    file = _write_json(data_dir / "train.json", [broken])
    # "exists" only stats: a file that is not an image loads (and fails later, in the collator).
    assert load_ecginstruct(file, check_images="exists")["id"] == ["broken"]
    # The default ("header") opens it lazily, without decoding pixels, and refuses it.
    with pytest.raises(InvalidRecordError, match="'broken'.*cannot decode image"):
        load_ecginstruct(file)
    with pytest.raises(InvalidRecordError, match="'broken'.*cannot decode image") as caught:
        load_ecginstruct(file, check_images="decode")
    assert caught.value.reason == "unreadable_image"
    missing = _write_json(data_dir / "missing.json", [BAD_RECORDS["missing_image"]])
    assert load_ecginstruct(missing, check_images="none")["id"] == ["bad-img"]
    with pytest.raises(ValueError, match="check_images"):
        load_ecginstruct(file, check_images="sometimes")


def test_bad_files(data_dir):
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        load_ecginstruct(data_dir / "nothing.json")
    (data_dir / "lines.jsonl").write_text(json.dumps(MULTI_TURN) + "\n{not json\n")
    with pytest.raises(InvalidRecordError, match=r"lines.jsonl: record #1 \(line 2\): invalid JSON"):
        load_ecginstruct(data_dir / "lines.jsonl")


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
def test_json_list_is_decoded_one_record_at_a_time_like_json_load(tmp_path, chunk):
    from evl_kd_trainer.data.ecginstruct import iter_json_array

    records = [
        {"id": f"r{i}", "image": f"a/{i}.png", "conversations": [{"from": "human", "value": 'q "é" \\n ,]' * i}]}
        for i in range(25)
    ] + [[1, 2], "x", None, 3.5, {}]
    path = tmp_path / "data.json"
    for indent in (None, 2):
        path.write_text(" \n" + json.dumps(records, indent=indent, ensure_ascii=indent is None) + "\n ")
        assert list(iter_json_array(str(path), chunk_chars=chunk)) == records
    path.write_text("[ ]")
    assert list(iter_json_array(str(path), chunk_chars=chunk)) == []


def test_json_list_errors_name_the_file(tmp_path):
    from evl_kd_trainer.data.ecginstruct import iter_json_array

    cases = {
        '{"id": 1}': "expected a JSON list",
        '[{"id": 1} {"id": 2}]': "character 11: expected ','",
        '[{"id": 1}, {"id"': "not valid JSON",
        '[{"id": 1}] x': "character 12: extra data",
        '[{"id": 1}, {"id": tru}]': "character 19: Expecting value",
    }
    for index, (text, message) in enumerate(cases.items()):
        path = tmp_path / f"bad{index}.json"
        path.write_text(text)
        for chunk in (4, 1 << 20):
            with pytest.raises(ValueError, match=rf"bad{index}\.json: .*{message}"):
                list(iter_json_array(str(path), chunk_chars=chunk))


def test_a_malformed_record_is_reported_without_reading_the_rest_of_the_file(tmp_path):
    from evl_kd_trainer.data.ecginstruct import iter_json_array

    path = tmp_path / "big.json"
    good = json.dumps({"id": "x", "value": "y" * 50})
    path.write_text("[" + good + ", {bad}, " + ", ".join([good] * 20000) + "]")
    records = iter_json_array(str(path), chunk_chars=256)
    assert next(records)["id"] == "x"
    with pytest.raises(ValueError, match="character 78: Expecting property name"):
        next(records)
