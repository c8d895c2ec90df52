"""Reading ECG-Bench-style split files: JSON, JSONL and parquet (embedded images), and clear errors for bad files."""

import io
import json

import pytest

from evl_kd_trainer.eval.records import RecordError, read_split
from evl_kd_trainer.testing import make_ecg_like_image


def _record(index, image="images/0.png", question="What are the superclasses?", answer="NORM"):
    return {
        "id": f"r{index}",
        "image": image,
        "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}],
    }


@pytest.fixture
def split_dir(tmp_path):
    (tmp_path / "images").mkdir()
    make_ecg_like_image(0).save(tmp_path / "images" / "0.png")
    return tmp_path


def test_json_records_resolve_images_against_the_file_folder(split_dir):
    path = split_dir / "ptb.json"
    path.write_text(json.dumps([_record(0), _record(1, answer="MI, STTC"), _record(2)]))
    loaded = read_split(path)
    assert [record.id for record in loaded.records] == ["r0", "r1", "r2"]
    assert loaded.records[1].reference == "MI, STTC"
    assert loaded.records[0].prompt == "What are the superclasses?"
    assert loaded.records[0].image == str(split_dir / "images" / "0.png")
    assert [record.index for record in read_split(path, max_samples=2).records] == [0, 1]


def test_jsonl_with_an_image_root(split_dir, tmp_path_factory):
    other = tmp_path_factory.mktemp("elsewhere")
    path = other / "csn.jsonl"
    path.write_text("\n".join(json.dumps(_record(i, answer="A")) for i in range(3)) + "\n\n")
    loaded = read_split(path, image_root=split_dir)
    assert len(loaded.records) == 3 and loaded.records[2].image == str(split_dir / "images" / "0.png")


def test_parquet_with_embedded_images(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    make_ecg_like_image(3).save(buffer, format="PNG")
    rows = [
        {**_record(i, answer=["yes"][0]), "image": {"bytes": buffer.getvalue(), "path": f"{i}.png"}, "extra": i}
        for i in range(4)
    ]
    path = tmp_path / "test-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    loaded = read_split(path, max_samples=3)
    assert len(loaded.records) == 3
    assert loaded.records[0].image == {"bytes": buffer.getvalue(), "path": "0.png"}

    pq.write_table(pa.Table.from_pylist([{"id": "x", "conversations": rows[0]["conversations"]}]), path)
    with pytest.raises(RecordError, match=r"test-00000-of-00001.parquet: missing column\(s\) \['image'\]"):
        read_split(path)


def test_missing_images_fail_or_are_skipped_and_listed(split_dir):
    path = split_dir / "g12.json"
    path.write_text(json.dumps([_record(0, answer="A"), _record(1, image="images/missing.png", answer="B")]))
    with pytest.raises(RecordError, match=r"record 'r1' \(#1\): image file not found: .*missing.png"):
        read_split(path)
    loaded = read_split(path, missing_images="skip")
    assert [record.id for record in loaded.records] == ["r0"]
    assert loaded.skipped[0][0] == "r1" and "missing.png" in loaded.skipped[0][1]


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([{"id": "a", "conversations": []}], r"record 'a' \(#0\): missing key\(s\) \['image'\]"),
        (
            [{**_record(0), "conversations": [{"from": "human", "value": "q"}]}],
            r"one human question and one gpt answer",
        ),
        (
            [{**_record(0), "conversations": [{"from": "gpt", "value": "a"}, {"from": "human", "value": "q"}]}],
            r"turn 0 must be \{'from': 'human'",
        ),
        ([{**_record(0), "image": 5}], r"'image' must be a path"),
        ({"not": "a list"}, r"expected a JSON list of records"),
    ],
)
def test_malformed_records_name_the_file_and_record(split_dir, records, message):
    path = split_dir / "bad.json"
    path.write_text(json.dumps(records))
    with pytest.raises(RecordError, match=message):
        read_split(path)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="split file not found"):
        read_split(tmp_path / "nope.json")
    (tmp_path / "split.csv").write_text("id\n")
    with pytest.raises(RecordError, match=r"expected a \.parquet, \.json or \.jsonl file"):
        read_split(tmp_path / "split.csv")
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(RecordError, match="no record to evaluate"):
        read_split(tmp_path / "empty.json")
    good = json.dumps(_record(0, image=None))
    (tmp_path / "broken.jsonl").write_text(good + "\n{oops\n")
    with pytest.raises(RecordError, match="line 2 is not valid JSON"):
        read_split(tmp_path / "broken.jsonl")
    (tmp_path / "x.json").write_text("[]")
    with pytest.raises(ValueError, match="missing_images must be one of"):
        read_split(tmp_path / "x.json", missing_images="ignore")


def test_the_synthetic_generators_test_split_reads_and_scores(tmp_path):
    """Contract with `evl_kd_trainer.ecg`: its multiple-choice test split is a valid `synthetic` split."""
    from evl_kd_trainer.ecg.synthetic import make_synthetic_dataset
    from evl_kd_trainer.eval import score_ecgbench
    from evl_kd_trainer.eval.parsing import parse_options

    paths = make_synthetic_dataset(
        tmp_path, n_train=0, n_test=4, image_size=(112, 112), layout="1x1", shuffle_options=True, duration=2.0
    )
    records = read_split(paths["test"]).records
    prompts = [record.prompt for record in records]
    references = [record.reference for record in records]
    option_texts = [parse_options(prompt)[letter] for prompt, letter in zip(prompts, references)]
    assert score_ecgbench("synthetic", references, references, prompts)["accuracy"] == 100.0
    scores = score_ecgbench("synthetic", option_texts, references, prompts)
    assert scores["accuracy"] == 100.0 and scores["unparsed"] == 0
    manifest = json.loads(open(paths["manifest"]).read())
    assert sorted(scores["per_class"]) == sorted(cls["name"] for cls in manifest["classes"])


def _hf_ecgqa_table(rows):
    """Rows in the Hugging Face `PULSE-ECG/ECGBench` `ecgqa-test` schema (its dataset card's `dataset_info`):
    `conversations` is a list of `{from: string, value: list<string>}`, the image an embedded struct."""
    import pyarrow as pa

    schema = pa.schema(
        [
            ("id", pa.string()),
            ("image_path", pa.string()),
            ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            ("conversations", pa.list_(pa.struct([("from", pa.string()), ("value", pa.list_(pa.string()))]))),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def _hf_row(index, question, answer, image_bytes):
    return {
        "id": f"ecgqa-{index}",
        "image_path": f"ecgqa/{index}.png",
        "image": {"bytes": image_bytes, "path": f"{index}.png"},
        "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}],
    }


def test_hugging_face_ecgqa_schema_with_list_valued_turns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from evl_kd_trainer.eval import score_ecgbench

    buffer = io.BytesIO()
    make_ecg_like_image(5).save(buffer, format="PNG")
    question = (
        "Does this ECG show symptoms of non-diagnostic t abnormalities? Options: yes, no, not sure. "
        "Only answer based on the given Options without any explanation."
    )
    rows = [
        _hf_row(0, [question], ["yes"], buffer.getvalue()),
        _hf_row(
            1,
            ["Which noise does this ECG show? ", "Options: baseline drift, static noise, none."],
            ["none"],
            buffer.getvalue(),
        ),
        _hf_row(2, [question], ["yes", "not sure"], buffer.getvalue()),
    ]
    path = tmp_path / "ecgqa-test.parquet"
    pq.write_table(_hf_ecgqa_table(rows), path)
    value_type = pq.read_schema(path).field("conversations").type.value_type.field("value").type
    assert value_type.equals(pa.list_(pa.string()))  # the published ecgqa-test typing

    records = read_split(path).records
    assert records[0].prompt == question  # the one-element list is the question
    assert records[1].prompt == "Which noise does this ECG show? Options: baseline drift, static noise, none."
    assert [record.reference for record in records] == [["yes"], ["none"], ["yes", "not sure"]]
    # The list answer is the gold set of options: scored as such (record 2 needs both options named).
    predictions = ["Yes.", "none", "yes"]
    scores = score_ecgbench("ecgqa", predictions, [r.reference for r in records], [r.prompt for r in records])
    assert scores["n"] == 3 and scores["accuracy"] == pytest.approx(200 / 3)


@pytest.mark.parametrize(
    ("question", "shown"),
    [([], r"\[\]"), ([""], r"\[''\]"), (["a", 3], r"\['a', 3\]"), (None, "None"), (7, "7")],
)
def test_truly_bad_questions_still_fail_naming_the_record(split_dir, question, shown):
    path = split_dir / "bad.json"
    path.write_text(json.dumps([_record(0, image=None, question=question)]))
    with pytest.raises(
        RecordError, match=rf"record 'r0' \(#0\): the question \(turn 0\) must be a non-empty string.*{shown}"
    ):
        read_split(path)
