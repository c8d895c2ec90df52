"""Synthetic ECG dataset: the simulator's classes, the written files, determinism, and that the pictures teach something."""

import json
import math
import os

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import median_filter

from evl_kd_trainer.data import load_ecginstruct
from evl_kd_trainer.ecg.cli import main as make_synthetic_main
from evl_kd_trainer.ecg.leads import STANDARD_LEADS
from evl_kd_trainer.ecg.records import LETTERS
from evl_kd_trainer.ecg.render import render_ecg
from evl_kd_trainer.ecg.simulate import DEFAULT_CLASSES, RHYTHM_CLASSES, _flutter_waves, simulate_ecg
from evl_kd_trainer.ecg.synthetic import make_synthetic_dataset, write_train_subset


def _rhythm_features(image: Image.Image, size: tuple[int, int]) -> tuple[float, float]:
    """(number of R peaks, coefficient of variation of R-R spacing) read off a rendered lead II strip.

    Per column the top-most trace pixel; a peak is a run of columns standing out by more than half the
    tallest deflection above the local (1-s median) trace level. Starts 0.5 s in, after the lead label.
    """
    _, geometry = render_ecg(np.zeros((12, 10)), 250, layout="1x1", size=size, return_geometry=True)
    gray = np.asarray(image.convert("L"), dtype=float)
    x0, x1 = math.ceil(geometry.time_to_x_px(0.5)), math.floor(geometry.time_to_x_px(10.0)) - 1
    dark = gray[:, x0:x1] < 150
    top = np.where(dark.any(axis=0), dark.argmax(axis=0), np.nan)
    top = np.where(np.isnan(top), np.nanmedian(top), top)
    height = median_filter(top, size=max(3, int(geometry.x_px(25.0))), mode="nearest") - top
    high = np.flatnonzero(height > 0.5 * height.max())
    breaks = np.flatnonzero(np.diff(high) > 1)
    centres = (np.concatenate(([high[0]], high[breaks + 1])) + np.concatenate((high[breaks], [high[-1]]))) / 2
    rr = np.diff(centres)
    return float(len(centres)), float(rr.std() / rr.mean())


def test_simulated_classes_have_their_heart_rate_and_regularity():
    assert set(DEFAULT_CLASSES) < set(RHYTHM_CLASSES)
    for code in RHYTHM_CLASSES:
        rhythm = RHYTHM_CLASSES[code]
        for index in range(5):
            ecg = simulate_ecg(code, np.random.default_rng(index), duration=10.0, sampling_rate=250.0)
            assert ecg.signal.shape == (12, 2500) and ecg.lead_names == STANDARD_LEADS
            assert rhythm.heart_rate[0] <= ecg.heart_rate <= rhythm.heart_rate[1]
            rr = np.diff(ecg.r_peaks)
            assert 60.0 / rr.mean() == pytest.approx(ecg.heart_rate, rel=0.15)
            cv = rr.std() / rr.mean()
            assert (cv > 0.08) if code == "AF" else (cv < 0.06), (code, cv)
            # R peaks are where lead II is tallest: the signal really beats at those times.
            samples = np.round(ecg.r_peaks * 250).astype(int)
            samples = samples[(samples > 2) & (samples < 2497)]
            assert np.median(ecg.signal[1, samples]) > np.percentile(ecg.signal[1], 95)
    # Limb leads obey Einthoven's law (III = II - I) and Goldberger's (aVR + aVL + aVF = 0) up to noise.
    for code in ("NSR", "AFL"):
        clean = simulate_ecg(code, np.random.default_rng(0), noise=False).signal
        assert np.allclose(clean[2], clean[1] - clean[0]) and np.allclose(clean[3] + clean[4] + clean[5], 0.0)
    # P waves only in sinus rhythm: 160 ms before each R peak, lead II has a bump in NSR, none in AF.
    for code, expect_p in (("NSR", True), ("AF", False)):
        ecg = simulate_ecg(code, np.random.default_rng(1), noise=False)
        p_at = np.round((ecg.r_peaks - 0.16) * 250).astype(int)
        p_at = p_at[p_at > 0]
        assert (np.median(ecg.signal[1, p_at]) > 0.05) == expect_p


def test_atrial_flutter_beats_like_sinus_tachycardia_over_a_sawtooth_at_twice_its_rate():
    """2:1 flutter: a rate in sinus tachycardia's range, regular beats, no P waves; the F waves are a sawtooth with
    two cycles per beat (slow descent, quick return in lead II), opposite in V1."""
    flutter, tachy = RHYTHM_CLASSES["AFL"], RHYTHM_CLASSES["ST"]
    assert flutter.flutter and not flutter.p_waves and not tachy.flutter
    assert max(flutter.heart_rate[0], tachy.heart_rate[0]) < min(flutter.heart_rate[1], tachy.heart_rate[1])
    fs, rr = 250.0, 0.42
    t = np.arange(2500) / fs
    beats = -1.5 + rr * np.arange(32)
    for seed in range(3):
        waves = _flutter_waves(t, beats, np.random.default_rng(seed))
        lead_ii, lead_v1 = waves[1], waves[6]
        assert 0.24 - 1e-9 <= np.ptp(lead_ii) <= 0.4 + 1e-9
        assert np.corrcoef(lead_ii, lead_v1)[0, 1] < -0.99
        half = round(rr / 2 * fs)  # a flutter cycle: the train repeats at half the RR interval, not at a quarter
        assert np.corrcoef(lead_ii[:-half], lead_ii[half:])[0, 1] > 0.99
        assert np.corrcoef(lead_ii[: -half // 2], lead_ii[half // 2 :])[0, 1] < 0.0
        falling = np.mean(np.diff(lead_ii) < 0)
        assert 0.6 < falling < 0.85, falling  # the slow downslope takes most of each cycle


def test_dataset_files_load_and_follow_the_benchmark_shape(tmp_path):
    paths = make_synthetic_dataset(
        tmp_path / "syn", n_train=8, n_test=6, seed=3, layout="1x1", image_size=(112, 48), augment_prob=0.5
    )
    assert set(paths) == {"train", "test", "manifest", "images"}
    manifest = json.loads(open(paths["manifest"]).read())
    assert manifest["task"] == "synthetic" and manifest["seed"] == 3
    assert [c["code"] for c in manifest["classes"]] == list(DEFAULT_CLASSES)
    assert manifest["counts"]["train"] == {
        "images": 8,
        "records": 16,
        "per_class": {"SB": 2, "NSR": 2, "ST": 2, "AF": 2},
        "augmented": manifest["counts"]["train"]["augmented"],
    }
    assert manifest["counts"]["test"]["records"] == 6 and manifest["counts"]["test"]["augmented"] == 0
    assert 0 < manifest["counts"]["train"]["augmented"] <= 8

    train = load_ecginstruct(paths["train"], check_images="decode")
    test = load_ecginstruct(paths["test"], check_images="decode")
    assert len(train) == 16 and len(test) == 6
    assert Image.open(test[0]["images"][0]["path"]).size == (112, 48)

    names = manifest["options"]
    labels = manifest["labels"]
    for record in json.loads(open(paths["test"]).read()):
        question, answer = record["conversations"][0]["value"], record["conversations"][1]["value"]
        assert question.startswith("<image>\n") and "\nA. Sinus bradycardia\nB. Normal sinus rhythm\n" in question
        assert answer in LETTERS[: len(names)]
        gold_name = RHYTHM_CLASSES[labels["test"][record["id"]]].name
        assert f"{answer}. {gold_name}" in question
    for record in json.loads(open(paths["train"]).read()):
        image_id = record["id"].rsplit("-", 1)[0]
        name = RHYTHM_CLASSES[labels["train"][image_id]].name
        answer = record["conversations"][1]["value"]
        assert (
            answer == name
            if record["id"].endswith("-closed")
            else f"{answer}. {name}" in record["conversations"][0]["value"]
        )


def test_dataset_is_deterministic_for_a_seed(tmp_path):
    kwargs = {"n_train": 4, "n_test": 4, "layout": "1x1", "image_size": (64, 32), "augment_prob": 1.0}
    first = make_synthetic_dataset(tmp_path / "a", seed=1, **kwargs)
    again = make_synthetic_dataset(tmp_path / "b", seed=1, **kwargs)
    other = make_synthetic_dataset(tmp_path / "c", seed=2, **kwargs)

    def content(paths):
        images = sorted(os.listdir(os.path.join(paths["images"], "train")))
        pixels = [open(os.path.join(paths["images"], "train", name), "rb").read() for name in images]
        return open(paths["train"]).read(), open(paths["test"]).read(), pixels

    assert content(first) == content(again)
    assert content(first)[2] != content(other)[2]


def test_shuffled_options_move_the_answer_letter(tmp_path):
    paths = make_synthetic_dataset(
        tmp_path / "s", n_train=0, n_test=16, layout="1x1", image_size=(64, 32), shuffle_options=True
    )
    records = json.loads(open(paths["test"]).read())
    labels = json.loads(open(paths["manifest"]).read())["labels"]["test"]
    letters_per_class: dict[str, set[str]] = {}
    for record in records:
        code = labels[record["id"]]
        letter = record["conversations"][1]["value"]
        assert f"{letter}. {RHYTHM_CLASSES[code].name}" in record["conversations"][0]["value"]
        letters_per_class.setdefault(code, set()).add(letter)
    assert any(len(letters) > 1 for letters in letters_per_class.values())


@pytest.mark.parametrize("size", [(224, 64), (112, 48)])
def test_classes_are_separable_from_the_pictures_by_a_trivial_feature(tmp_path, size):
    """Nearest centroid on (R-peak count, R-R irregularity) read off the PNGs answers the test questions."""
    paths = make_synthetic_dataset(tmp_path / "sep", n_train=40, n_test=40, seed=5, layout="1x1", image_size=size)
    manifest = json.loads(open(paths["manifest"]).read())
    codes = [c["code"] for c in manifest["classes"]]
    root = os.path.dirname(paths["train"])

    def features(split):
        ids = sorted(manifest["labels"][split])
        x = np.array([_rhythm_features(Image.open(f"{root}/images/{split}/{i}.png"), size) for i in ids])
        return ids, x, np.array([codes.index(manifest["labels"][split][i]) for i in ids])

    _, x_train, y_train = features("train")
    test_ids, x_test, y_test = features("test")
    scale = x_train.std(axis=0)
    centroids = np.stack([x_train[y_train == k].mean(axis=0) for k in range(len(codes))]) / scale
    predicted = np.argmin((((x_test / scale)[:, None, :] - centroids[None]) ** 2).sum(axis=-1), axis=1)
    accuracy = float((predicted == y_test).mean())
    assert accuracy >= 0.9, accuracy
    # ... which is the same as answering the benchmark's multiple-choice questions.
    gold = {r["id"]: r["conversations"][1]["value"] for r in json.loads(open(paths["test"]).read())}
    answered = [LETTERS[p] == gold[i] for i, p in zip(test_ids, predicted)]
    assert np.mean(answered) == pytest.approx(accuracy)


def test_train_subset_keeps_the_first_pictures_of_each_class_with_all_their_questions(tmp_path):
    paths = make_synthetic_dataset(
        tmp_path / "d", n_train=30, n_test=0, classes=["ST", "AFL", "SB"], layout="1x1", image_size=(64, 32)
    )
    labels = json.loads(open(paths["manifest"]).read())["labels"]["train"]
    subset = json.loads(open(write_train_subset(tmp_path / "d", 6, name="small.json")).read())
    images = [record["image"].rsplit("/", 1)[1][:-4] for record in subset]
    assert len(subset) == 12 and all(images.count(image) == 2 for image in images)  # closed + mcq of 6 pictures
    kept = sorted(set(images))
    assert sorted(labels[image] for image in kept) == ["AFL", "AFL", "SB", "SB", "ST", "ST"]
    for code in ("ST", "AFL", "SB"):  # the first two pictures of each class, in generation order
        assert [i for i in kept if labels[i] == code] == [i for i in sorted(labels) if labels[i] == code][:2]
    assert os.path.isfile(tmp_path / "d" / "small.json")
    with pytest.raises(ValueError, match="multiple of the 3 classes"):
        write_train_subset(tmp_path / "d", 7)
    with pytest.raises(ValueError, match="fewer than 11 pictures"):
        write_train_subset(tmp_path / "d", 33)


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="Unknown rhythm class 'VT'"):
        make_synthetic_dataset(tmp_path, n_train=2, n_test=2, classes=["SB", "VT"])
    with pytest.raises(ValueError, match="question_types"):
        make_synthetic_dataset(tmp_path, n_train=2, n_test=2, question_types=["open"])
    with pytest.raises(ValueError, match="two distinct classes"):
        make_synthetic_dataset(tmp_path, n_train=2, n_test=2, classes=["SB"])
    with pytest.raises(ValueError, match="Unknown ECG layout"):
        make_synthetic_dataset(tmp_path, n_train=2, n_test=2, layout="2x2")


def test_cli_writes_the_dataset(tmp_path, capsys):
    out = tmp_path / "cli"
    code = make_synthetic_main(
        [str(out), "--n-train", "4", "--n-test", "2", "--layout", "rhythm", "--size", "96x32", "--classes", "SB,ST"]
    )
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [c["code"] for c in manifest["classes"]] == ["SB", "ST"]
    assert manifest["render"]["image_size"] == [96, 32]
    assert "train 4 pictures / 8 records" in capsys.readouterr().out
    assert make_synthetic_main([str(out), "--classes", "SB,XX"]) == 2
    assert "Unknown rhythm class 'XX'" in capsys.readouterr().err
