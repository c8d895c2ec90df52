"""PTB-XL and CODE-15% converters on small fixture archives written here with wfdb and h5py."""

import json
import os

import h5py
import numpy as np
import pandas as pd
import pytest
import wfdb
from PIL import Image

from evl_kd_trainer.data import load_ecginstruct
from evl_kd_trainer.ecg.cli_code15 import main as code15_main
from evl_kd_trainer.ecg.cli_ptbxl import main as ptbxl_main
from evl_kd_trainer.ecg.code15 import convert_code15
from evl_kd_trainer.ecg.conversion import ConversionError
from evl_kd_trainer.ecg.leads import STANDARD_LEADS
from evl_kd_trainer.ecg.ptbxl import convert_ptbxl
from evl_kd_trainer.ecg.records import CODE15_QUESTION, PTBXL_QUESTION
from evl_kd_trainer.ecg.render import render_ecg
from evl_kd_trainer.ecg.simulate import simulate_ecg

PTBXL_LEADS = ["I", "II", "III", "AVR", "AVL", "AVF", "V1", "V2", "V3", "V4", "V5", "V6"]
RENDER = {"layout": "3x4", "dpi": 40.0}  # small pictures keep the tests fast


def _ecg(seed: int, fs: float, seconds: float = 10.0) -> np.ndarray:
    return simulate_ecg("NSR", np.random.default_rng(seed), duration=seconds, sampling_rate=fs).signal


# ---------------------------------------------------------------------------------------------- PTB-XL


def _write_ptbxl(root, missing_signal=(6,)):
    """Seven ECGs: train NORM, val MI+STTC, test HYP and CD (in uV), no superclass, missing file, bad scp_codes."""
    rows = [
        (1, "{'NORM': 100.0, 'SR': 0.0}", 1),
        (2, "{'IMI': 100.0, 'NDT': 50.0}", 9),
        (3, "{'LVH': 50.0}", 10),
        (4, "{'CLBBB': 100.0, 'SR': 0.0}", 10),
        (5, "{'SR': 0.0}", 2),
        (6, "{'NORM': 100.0}", 3),
        (7, "NORM", 4),
    ]
    records = []
    for ecg_id, codes, fold in rows:
        names = {}
        for fs, folder, suffix in ((500, "records500", "hr"), (100, "records100", "lr")):
            name = f"{folder}/00000/{ecg_id:05d}_{suffix}"
            names[suffix] = name
            if ecg_id in missing_signal:
                continue
            os.makedirs(os.path.join(root, os.path.dirname(name)), exist_ok=True)
            signal = _ecg(ecg_id, fs).T
            units = ["mV"] * 12
            if ecg_id == 3:  # stored in microvolts: the converter must scale it back
                signal, units = signal * 1000.0, ["uV"] * 12
            wfdb.wrsamp(
                os.path.basename(name),
                fs=fs,
                units=units,
                sig_name=PTBXL_LEADS,
                p_signal=signal,
                fmt=["16"] * 12,
                adc_gain=[1000.0 if ecg_id != 3 else 1.0] * 12,
                baseline=[0] * 12,
                write_dir=os.path.join(root, os.path.dirname(name)),
            )
        records.append(
            {
                "ecg_id": ecg_id,
                "patient_id": 100 + ecg_id,
                "scp_codes": codes,
                "strat_fold": fold,
                "filename_lr": names["lr"],
                "filename_hr": names["hr"],
                "report": "sinus rhythm",
            }
        )
    pd.DataFrame(records).to_csv(os.path.join(root, "ptbxl_database.csv"), index=False)
    statements = pd.DataFrame(
        {
            "": ["NORM", "IMI", "NDT", "LVH", "CLBBB", "SR"],
            "description": ["normal", "inferior MI", "non-diagnostic T", "LVH", "complete LBBB", "sinus rhythm"],
            "diagnostic": [1.0, 1.0, 1.0, 1.0, 1.0, np.nan],
            "rhythm": [np.nan] * 5 + [1.0],
            "diagnostic_class": ["NORM", "MI", "STTC", "HYP", "CD", np.nan],
        }
    )
    statements.to_csv(os.path.join(root, "scp_statements.csv"), index=False)
    return root


@pytest.fixture(scope="module")
def ptbxl_root(tmp_path_factory):
    return _write_ptbxl(str(tmp_path_factory.mktemp("ptbxl")))


def _answers(path):
    return {r["id"]: r["conversations"][1]["value"] for r in json.loads(open(path).read())}


def test_ptbxl_stops_at_the_first_bad_record_and_names_it(ptbxl_root, tmp_path):
    with pytest.raises(ConversionError, match=r"ptbxl_database.csv: record 7: scp_codes 'NORM' .*\[bad_scp_codes\]"):
        convert_ptbxl(ptbxl_root, tmp_path / "out", **RENDER)
    with pytest.raises(ConversionError, match=r"00006_hr: record 6: WFDB record not found \[missing_signal\]"):
        convert_ptbxl(ptbxl_root, tmp_path / "out", limit=5, **RENDER)


def test_ptbxl_converts_and_counts_what_it_skips(ptbxl_root, tmp_path):
    report = convert_ptbxl(ptbxl_root, tmp_path / "out", skip_invalid=True, **RENDER)
    assert dict(report.skipped) == {"no_superclass": 1, "missing_signal": 1, "bad_scp_codes": 1}
    assert "record 6" in report.first_errors["missing_signal"][0]
    assert report.images == 4
    assert dict(report.records) == {"train": 2, "val": 1, "test": 2}

    train = _answers(report.files["train"])
    assert train["ptbxl-00001-closed"] == "NORM"
    # the options are shuffled per record (seeded by its id): the letter is the one of the NORM option
    mcq = next(r for r in json.loads(open(report.files["train"]).read()) if r["id"] == "ptbxl-00001-mcq")
    options = dict(line.split(". ", 1) for line in mcq["conversations"][0]["value"].splitlines() if line[1:3] == ". ")
    assert options[train["ptbxl-00001-mcq"]].startswith("NORM (") and len(options) == 5
    assert _answers(report.files["val"]) == {"ptbxl-00002-closed": "MI, STTC"}  # multi-label: no mcq record
    assert _answers(report.files["test"]) == {"ptbxl-00003": "HYP", "ptbxl-00004": "CD"}
    test_record = json.loads(open(report.files["test"]).read())[0]
    assert test_record["conversations"][0]["value"] == f"<image>\n{PTBXL_QUESTION}"
    assert test_record["image"] == "images/ptbxl/00003_hr-0.png"

    for split in ("train", "val", "test"):
        dataset = load_ecginstruct(report.files[split], check_images="decode")
        assert len(dataset) == report.records[split]
    manifest = json.loads(open(report.files["manifest"]).read())
    assert manifest["skipped"] == dict(report.skipped) and manifest["records"] == dict(report.records)
    assert manifest["settings"]["sampling_rate"] == 500


def test_ptbxl_pictures_show_the_record_in_millivolts_and_standard_lead_order(ptbxl_root, tmp_path):
    report = convert_ptbxl(ptbxl_root, tmp_path / "out", splits=["test"], skip_invalid=True, **RENDER)
    converted = np.asarray(Image.open(tmp_path / "out" / "images/ptbxl/00003_hr-0.png"))
    # Record 3 was stored in microvolts; the original millivolt signal drawn directly gives the same page.
    direct = np.asarray(render_ecg(_ecg(3, 500), 500, STANDARD_LEADS, **RENDER))
    assert converted.shape == direct.shape
    assert np.mean(np.any(converted != direct, axis=-1)) < 0.002  # WFDB quantisation may move a pixel
    swapped = np.asarray(render_ecg(_ecg(3, 500)[::-1], 500, STANDARD_LEADS, **RENDER))
    assert np.mean(np.any(swapped != direct, axis=-1)) > 0.01  # ... while a lead mix-up would show
    assert report.records["test"] == 2


def test_ptbxl_low_rate_records(ptbxl_root, tmp_path):
    report = convert_ptbxl(ptbxl_root, tmp_path / "lr", sampling_rate=100, splits=["test"], **RENDER)
    assert sorted(os.listdir(tmp_path / "lr/images/ptbxl")) == ["00003_lr-0.png", "00004_lr-0.png"]
    assert not report.skipped  # the bad records are all in other splits, which are not read
    with pytest.raises(ValueError, match="100 or 500 Hz"):
        convert_ptbxl(ptbxl_root, tmp_path / "x", sampling_rate=250)
    with pytest.raises(FileNotFoundError, match="ptbxl_database.csv"):
        convert_ptbxl(tmp_path / "nowhere", tmp_path / "x")


def test_ptbxl_cli(ptbxl_root, tmp_path, capsys):
    code = ptbxl_main([ptbxl_root, str(tmp_path / "cli"), "--skip-invalid", "--splits", "train", "--dpi", "30"])
    assert code == 0
    out = capsys.readouterr().out
    assert "ptbxl: 1 images, records: train 2; skipped: bad_scp_codes 1, missing_signal 1, no_superclass 1" in out
    assert "skipped missing_signal x1, e.g. " in out and "record 6" in out
    assert ptbxl_main([ptbxl_root, str(tmp_path / "cli2"), "--dpi", "30"]) == 2
    assert "record 7" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- CODE-15%


def _padded(signal: np.ndarray) -> np.ndarray:
    """(12, n) -> (4096, 12) zero-padded on both sides, like the archive."""
    pad = 4096 - signal.shape[1]
    out = np.zeros((4096, 12), dtype=np.float32)
    out[pad // 2 : pad // 2 + signal.shape[1]] = signal.T
    return out


def _write_code15(root):
    """Two HDF5 parts plus an absent third; exams with single, multiple, no labels; bad rows."""
    rows = [
        # exam_id, labels, normal_ecg, patient, trace_file
        (101, {"SB"}, False, 1, "exams_part0.hdf5"),
        (102, {"RBBB", "AF"}, False, 2, "exams_part0.hdf5"),
        (103, set(), True, 3, "exams_part0.hdf5"),  # all-zero tracing
        (105, set(), True, 5, "exams_part1.hdf5"),  # NORM
        (106, set(), False, 5, "exams_part1.hdf5"),  # ABNORMAL, same patient as 105
        (107, {"ST"}, False, 7, "exams_part1.hdf5"),
        (200, {"AF"}, False, 9, "exams_part5.hdf5"),  # part not on disk
    ]
    labels = ["1dAVb", "RBBB", "LBBB", "SB", "ST", "AF"]
    table = [
        {
            "exam_id": exam,
            "age": 60,
            "is_male": True,
            **{label: label in found for label in labels},
            "patient_id": patient,
            "normal_ecg": normal,
            "trace_file": trace,
        }
        for exam, found, normal, patient, trace in rows
    ]
    pd.DataFrame(table).to_csv(os.path.join(root, "exams.csv"), index=False)
    part0 = np.stack(
        [
            _padded(_ecg(101, 400, 10.0)),
            _padded(_ecg(102, 400, 7.0)),
            np.zeros((4096, 12), np.float32),
            _padded(_ecg(104, 400, 10.0)),  # exam 104 is not in exams.csv
            np.zeros((4096, 12), np.float32),  # padding row
        ]
    )
    with h5py.File(os.path.join(root, "exams_part0.hdf5"), "w") as f:
        f["exam_id"] = np.array([101, 102, 103, 104, 0])
        f["tracings"] = part0
    with h5py.File(os.path.join(root, "exams_part1.hdf5"), "w") as f:
        f["exam_id"] = np.array([105, 106, 107])
        f["tracings"] = np.stack([_padded(_ecg(e, 400, 10.0)) for e in (105, 106, 107)])
    return root


@pytest.fixture(scope="module")
def code15_root(tmp_path_factory):
    return _write_code15(str(tmp_path_factory.mktemp("code15")))


def test_code15_stops_at_the_first_bad_exam_and_names_it(code15_root, tmp_path):
    with pytest.raises(ConversionError, match=r"exams_part0.hdf5: record 104: exam_id not in .*exams.csv"):
        convert_code15(code15_root, tmp_path / "out", **RENDER)
    with pytest.raises(ConversionError, match=r"record 103: the tracing is all zeros \[empty_tracing\]"):
        convert_code15(code15_root, tmp_path / "out", limit=3, **RENDER)


def test_code15_converts_and_counts_what_it_skips(code15_root, tmp_path):
    report = convert_code15(code15_root, tmp_path / "out", test_fraction=0.5, skip_invalid=True, **RENDER)
    assert dict(report.skipped) == {
        "trace_file_missing": 1,
        "not_in_exams_csv": 1,
        "padding_row": 1,
        "empty_tracing": 1,
    }
    assert report.images == 5
    answers = {**_answers(report.files["train"]), **_answers(report.files["test"])}
    closed = {key.removesuffix("-closed"): value for key, value in answers.items() if not key.endswith("-mcq")}
    assert closed == {
        "code15-101": "SB",
        "code15-102": "RBBB, AF",
        "code15-105": "NORM",
        "code15-106": "ABNORMAL",
        "code15-107": "ST",
    }
    # Patients never straddle splits (105 and 106 share one), and the split is a seeded function of the patient.
    test_ids, train_ids = set(_answers(report.files["test"])), set(_answers(report.files["train"]))
    assert ("code15-105" in test_ids) == ("code15-106" in test_ids)
    assert test_ids and train_ids
    again = convert_code15(code15_root, tmp_path / "again", test_fraction=0.5, skip_invalid=True, **RENDER)
    assert set(_answers(again.files["test"])) == test_ids
    for record in json.loads(open(report.files["test"]).read()):
        assert record["conversations"][0]["value"] == f"<image>\n{CODE15_QUESTION}"
    for split in ("train", "test"):
        assert len(load_ecginstruct(report.files[split], check_images="decode")) == report.records[split]
    # A single-label training exam also gets a lettered question; "ABNORMAL" and multi-label exams do not.
    mcq = {key for key in train_ids if key.endswith("-mcq")}
    single_label = {f"code15-{exam}" for exam in (101, 105, 107)}  # SB, NORM, ST
    assert mcq == {f"{key}-mcq" for key in single_label if f"{key}-closed" in train_ids}
    assert {key.removesuffix("-closed") for key in train_ids if key.endswith("-closed")} & single_label


def test_code15_pictures_trim_the_padding_and_keep_the_leads(code15_root, tmp_path):
    convert_code15(code15_root, tmp_path / "out", test_fraction=0.0, skip_invalid=True, **RENDER)
    ten = Image.open(tmp_path / "out/images/code15/101-0.png")
    seven = Image.open(tmp_path / "out/images/code15/102-0.png")
    assert seven.width < ten.width  # a 7-s exam gives a 7-s page (195 mm instead of 270 mm)
    assert ten.width == round(270 / 25.4 * RENDER["dpi"])
    direct = render_ecg(_ecg(101, 400, 10.0).astype(np.float32), 400, STANDARD_LEADS, **RENDER)
    assert np.array_equal(np.asarray(ten), np.asarray(direct))


def test_code15_bad_files_and_labels_are_named(tmp_path):
    os.makedirs(tmp_path / "archive")
    root = _write_code15(str(tmp_path / "archive"))
    with h5py.File(os.path.join(root, "exams_part2.hdf5"), "w") as f:
        f["exam_id"] = np.array([300])
    with pytest.raises(ConversionError, match=r"exams_part2.hdf5: record \*: not a CODE-15% HDF5 file"):
        convert_code15(root, tmp_path / "out", skip_invalid=False, limit=2, **RENDER)
    report = convert_code15(root, tmp_path / "out", skip_invalid=True, **RENDER)
    assert report.skipped["bad_file"] == 1

    exams = pd.read_csv(os.path.join(root, "exams.csv"))
    exams["SB"] = exams["SB"].astype(object)
    exams.loc[0, "SB"] = "maybe"
    exams.to_csv(os.path.join(root, "exams.csv"), index=False)
    os.remove(os.path.join(root, "exams_part2.hdf5"))
    with pytest.raises(ConversionError, match=r"record 101: column 'SB' has 'maybe', not a boolean"):
        convert_code15(root, tmp_path / "out", **RENDER)
    pd.DataFrame({"exam_id": [1]}).to_csv(os.path.join(root, "exams.csv"), index=False)
    with pytest.raises(ValueError, match=r"exams.csv: missing column\(s\) \['1dAVb'"):
        convert_code15(root, tmp_path / "out")


def test_code15_workers_give_the_same_output(code15_root, tmp_path):
    serial = convert_code15(code15_root, tmp_path / "serial", test_fraction=0.5, skip_invalid=True, **RENDER)
    parallel = convert_code15(
        code15_root, tmp_path / "parallel", test_fraction=0.5, skip_invalid=True, num_workers=2, **RENDER
    )
    assert dict(parallel.skipped) == dict(serial.skipped)
    for split in ("train", "test"):
        assert open(parallel.files[split]).read() == open(serial.files[split]).read()
    for name in os.listdir(tmp_path / "serial/images/code15"):
        a = open(tmp_path / "serial/images/code15" / name, "rb").read()
        assert a == open(tmp_path / "parallel/images/code15" / name, "rb").read()


def test_code15_cli(code15_root, tmp_path, capsys):
    code = code15_main([code15_root, str(tmp_path / "cli"), "--skip-invalid", "--dpi", "30", "--test-fraction", "0"])
    assert code == 0
    out = capsys.readouterr().out
    assert "code15: 5 images" in out and "skipped: empty_tracing 1, not_in_exams_csv 1" in out
    assert code15_main([str(tmp_path), str(tmp_path / "cli2")]) == 2
    assert "exams.csv" in capsys.readouterr().err


def test_mcq_options_are_shuffled_per_record_and_reproducibly():
    from evl_kd_trainer.ecg.records import label_records

    names = {"NORM": "normal ECG", "MI": "myocardial infarction", "STTC": "ST/T change", "CD": "conduction"}

    def letter(base_id, shuffle=True):
        records = label_records(
            base_id, "x.png", ["NORM"], split="train", question="q", order=list(names), mcq_question="Which?",
            mcq_names=names, question_types=("mcq",), shuffle_options=shuffle,
        )  # fmt: skip
        return records[0]["conversations"][1]["value"]

    letters = [letter(f"ecg-{i}") for i in range(40)]
    assert len(set(letters)) == 4  # NORM lands on every letter for some record
    assert letters == [letter(f"ecg-{i}") for i in range(40)]  # same id, same order
    assert {letter(f"ecg-{i}", shuffle=False) for i in range(5)} == {"A"}
