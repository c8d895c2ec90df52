"""ECG rendering: paper geometry measured on the pixels (grid pitch, 25 mm/s, 10 mm/mV), layouts, augmentations."""

import numpy as np
import pytest
from PIL import Image

from evl_kd_trainer.ecg.augment import Augmentation, AugmentConfig, apply_augmentation, sample_augmentation
from evl_kd_trainer.ecg.layouts import LAYOUTS, Layout, get_layout
from evl_kd_trainer.ecg.leads import STANDARD_LEADS, canonical_lead, to_standard_order
from evl_kd_trainer.ecg.render import DEFAULT_STYLE, paper_size_mm, render_ecg

FS = 500
DPI_10_PX_PER_MM = 254.0  # exactly 10 pixels per millimetre


def _signal(values_ii: np.ndarray) -> np.ndarray:
    """12 leads, all zero except lead II."""
    signal = np.zeros((12, values_ii.size))
    signal[1] = values_ii
    return signal


def _dark(image: Image.Image) -> np.ndarray:
    """Boolean mask of trace (black) pixels."""
    return np.asarray(image.convert("L")) < 80


def _trace_center_rows(mask: np.ndarray, column: int) -> float:
    rows = np.flatnonzero(mask[:, column])
    assert rows.size, f"no trace pixel in column {column}"
    return float(rows.mean())


def _grid_columns(image: Image.Image, row: int, color: tuple[int, int, int]) -> np.ndarray:
    pixels = np.asarray(image)[row]
    return np.flatnonzero(np.all(pixels == np.asarray(color), axis=1))


def _runs(indices: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous runs of sorted indices as (first, last)."""
    if indices.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(indices) > 1)
    starts = np.concatenate(([indices[0]], indices[breaks + 1]))
    ends = np.concatenate((indices[breaks], [indices[-1]]))
    return list(zip(starts.tolist(), ends.tolist()))


def test_one_millivolt_step_is_ten_millimetres():
    t = np.arange(10 * FS) / FS
    step = np.where(t >= 5.0, 1.0, 0.0)
    image, geometry = render_ecg(
        _signal(step), FS, layout="1x1", dpi=DPI_10_PX_PER_MM, grid=False, labels=False, return_geometry=True
    )
    assert geometry.px_per_mm_y == pytest.approx(10.0)
    mask = _dark(image)
    before = _trace_center_rows(mask, round(geometry.time_to_x_px(2.0)))
    after = _trace_center_rows(mask, round(geometry.time_to_x_px(8.0)))
    assert before - after == pytest.approx(10.0 * geometry.px_per_mm_y, abs=1.0)  # 1 mV = 10 mm = 100 px
    (panel,) = geometry.panels
    assert before == pytest.approx(geometry.y_px(panel.baseline_mm), abs=1.0)


def test_gain_is_a_parameter():
    t = np.arange(10 * FS) / FS
    step = np.where(t >= 5.0, 1.0, 0.0)
    image, geometry = render_ecg(
        _signal(step), FS, layout="1x1", dpi=DPI_10_PX_PER_MM, gain=5.0, grid=False, return_geometry=True
    )
    mask = _dark(image)
    jump = _trace_center_rows(mask, round(geometry.time_to_x_px(2.0))) - _trace_center_rows(
        mask, round(geometry.time_to_x_px(8.0))
    )
    assert jump == pytest.approx(50.0, abs=1.0)


def test_paper_speed_is_25_mm_per_second():
    spikes = np.zeros(10 * FS)
    spikes[[1 * FS, 3 * FS]] = 2.0  # one-sample 2 mV spikes at 1 s and 3 s
    image, geometry = render_ecg(
        _signal(spikes), FS, layout="1x1", dpi=DPI_10_PX_PER_MM, grid=False, labels=False, return_geometry=True
    )
    mask = _dark(image)
    (panel,) = geometry.panels
    # Columns whose trace reaches more than 1 mV above the baseline.
    high = np.flatnonzero(mask[: round(geometry.y_px(panel.baseline_mm - 10.0))].any(axis=0))
    high = high[high > geometry.x_px(geometry.x0_mm)]  # not the calibration pulse
    spikes_at = [np.mean(run) for run in _runs(high)]
    assert len(spikes_at) == 2
    assert spikes_at[1] - spikes_at[0] == pytest.approx(2.0 * 25.0 * 10.0, abs=1.0)  # 2 s = 50 mm = 500 px
    assert spikes_at[0] == pytest.approx(geometry.time_to_x_px(1.0), abs=1.0)


def test_calibration_pulse_is_one_millivolt_by_point_two_seconds():
    image, geometry = render_ecg(
        np.full((12, 10 * FS), np.nan),
        FS,
        layout="1x1",
        dpi=DPI_10_PX_PER_MM,
        grid=False,
        labels=False,
        return_geometry=True,
    )
    mask = _dark(image)
    region = mask[:, : round(geometry.x_px(geometry.x0_mm))]
    rows, cols = np.nonzero(region)
    # Outer extent = size + one stroke width (the stroke is centred on the path).
    stroke = max(1, round(DEFAULT_STYLE.trace_width_mm * 10))
    assert rows.max() - rows.min() + 1 == pytest.approx(100 + stroke, abs=1)  # 10 mm
    vertical_edges = [c for c in np.unique(cols) if region[:, c].sum() > 50]
    edges = [np.mean(run) for run in _runs(np.asarray(vertical_edges))]
    assert edges[1] - edges[0] == pytest.approx(50.0, abs=1.0)  # 0.2 s x 25 mm/s = 5 mm


@pytest.mark.parametrize("dpi", [DPI_10_PX_PER_MM, 150.0, 100.0])
def test_grid_lines_are_one_millimetre_apart_at_the_dpi(dpi):
    image, geometry = render_ecg(
        np.full((12, 10 * FS), np.nan), FS, layout="1x1", dpi=dpi, labels=False, calibration=False, return_geometry=True
    )
    px_per_mm = dpi / 25.4
    assert geometry.px_per_mm_x == pytest.approx(px_per_mm)
    row = round(geometry.y_px(7.5))  # between major lines
    minor = _grid_columns(image, row, DEFAULT_STYLE.minor_grid)
    major = _grid_columns(image, row, DEFAULT_STYLE.major_grid)
    lines = np.sort(np.concatenate([[np.mean(run) for run in _runs(minor)], [np.mean(run) for run in _runs(major)]]))
    pitch = np.diff(lines)
    assert np.all(np.abs(pitch - px_per_mm) <= 1.0)
    assert (lines[-1] - lines[0]) / (lines.size - 1) == pytest.approx(px_per_mm, rel=0.01)
    # Every fifth line is a major line: 5 mm apart.
    major_centres = np.asarray([np.mean(run) for run in _runs(major)])
    assert np.diff(major_centres).mean() == pytest.approx(5 * px_per_mm, rel=0.01)
    on_canvas = [k for k in range(0, int(geometry.paper_width_mm) + 1, 5) if int(k * px_per_mm) < geometry.width_px]
    assert major_centres.size == len(on_canvas)


def test_dpi_and_size_set_the_picture_size():
    signal = np.zeros((12, 10 * FS))
    width_mm, height_mm = paper_size_mm(get_layout("3x4"), 10.0, 25.0)
    image = render_ecg(signal, FS, layout="3x4", dpi=200)
    assert image.size == (round(width_mm * 200 / 25.4), round(height_mm * 200 / 25.4))
    small, geometry = render_ecg(signal, FS, layout="3x4", size=(112, 96), return_geometry=True)
    assert small.size == (112, 96) and small.mode == "RGB"
    assert geometry.px_per_mm_x == pytest.approx(112 / width_mm) and geometry.px_per_mm_y == pytest.approx(
        96 / height_mm
    )
    assert geometry.supersample > 1


def test_small_rhythm_strip_keeps_a_visible_trace_and_faint_grid():
    t = np.arange(10 * FS) / FS
    beats = np.exp(-0.5 * ((t % 0.8 - 0.4) / 0.01) ** 2)
    image = render_ecg(_signal(beats), FS, layout="1x1", size=(224, 48))
    gray = np.asarray(image.convert("L"))
    assert gray.min() < 90  # downsampling did not wash the trace out
    assert np.median(gray) > 200  # the background stays light


def test_layouts_place_every_lead():
    signal = np.random.default_rng(0).normal(0, 0.1, (12, 10 * FS))
    for name, layout in LAYOUTS.items():
        _, geometry = render_ecg(signal, FS, layout=name, dpi=50, return_geometry=True)
        leads = [panel.lead for panel in geometry.panels]
        assert set(leads) == set(layout.leads)
        for panel in geometry.panels:
            assert 0 <= geometry.x_px(panel.x_start_mm) < geometry.x_px(panel.x_end_mm) <= geometry.width_px
            assert 0 < geometry.y_px(panel.baseline_mm) < geometry.height_px
    _, geometry = render_ecg(signal, FS, layout="3x4", dpi=50, return_geometry=True)
    assert len(geometry.panels) == 13
    rhythm = geometry.panels[-1]
    assert (rhythm.lead, rhythm.t_start, rhythm.t_end) == ("II", 0.0, 10.0)
    assert [(p.lead, p.t_start) for p in geometry.panels_for("V4")] == [("V4", 7.5)]
    assert [p.lead for p in geometry.panels if p.row == 0] == ["I", "aVR", "V1", "V4"]


def test_labels_are_drawn_only_when_asked():
    signal = np.full((12, 10 * FS), np.nan)
    kwargs = {"layout": "12x1", "dpi": 100, "grid": False, "calibration": False}
    assert not _dark(render_ecg(signal, FS, labels=False, **kwargs)).any()
    with_labels, geometry = render_ecg(signal, FS, labels=True, return_geometry=True, **kwargs)
    mask = _dark(with_labels)
    for panel in geometry.panels:  # ink near the top-left corner of every row
        top, left = round(geometry.y_px(panel.row_top_mm)), round(geometry.x_px(panel.x_start_mm))
        assert mask[top : top + 20, left : left + 40].any(), panel.lead


def test_lead_names_in_archive_spellings_and_any_order():
    rng = np.random.default_rng(1)
    standard = rng.normal(0, 0.3, (12, 10 * FS))
    names = ["V6", "V5", "V4", "V3", "V2", "V1", "AVF", "AVL", "AVR", "DIII", "DII", "DI"]
    reversed_signal = standard[::-1]
    a = np.asarray(render_ecg(standard, FS, STANDARD_LEADS, layout="3x4", dpi=60))
    b = np.asarray(render_ecg(reversed_signal, FS, names, layout="3x4", dpi=60))
    assert np.array_equal(a, b)
    assert np.array_equal(to_standard_order(reversed_signal, names), standard)
    assert canonical_lead("avr") == "aVR"


def test_bad_inputs_name_the_problem():
    signal = np.zeros((12, 100))
    with pytest.raises(ValueError, match="transpose"):
        render_ecg(signal.T, FS)
    with pytest.raises(ValueError, match=r"needs lead\(s\) \['V1'"):
        render_ecg(signal[:6], FS, STANDARD_LEADS[:6], layout="3x4")
    with pytest.raises(ValueError, match="Unknown ECG lead name 'X7'"):
        render_ecg(signal, FS, [*STANDARD_LEADS[:11], "X7"])
    with pytest.raises(ValueError, match="appears twice"):
        render_ecg(signal, FS, [*STANDARD_LEADS[:11], "I"])
    with pytest.raises(ValueError, match="Unknown ECG layout"):
        render_ecg(signal, FS, layout="5x5")
    with pytest.raises(ValueError, match="sampling_rate"):
        render_ecg(signal, 0)
    with pytest.raises(ValueError, match="infinite"):
        render_ecg(np.full((12, 100), np.inf), FS)
    with pytest.raises(ValueError, match="at least one row"):
        Layout("empty", (), 10.0)


def test_nan_samples_leave_a_gap():
    values = np.full(10 * FS, 0.5)
    values[4 * FS : 6 * FS] = np.nan
    image, geometry = render_ecg(
        _signal(values), FS, layout="1x1", dpi=100, grid=False, labels=False, return_geometry=True
    )
    mask = _dark(image)
    assert mask[:, round(geometry.time_to_x_px(2.0))].any()
    assert not mask[:, round(geometry.time_to_x_px(5.0))].any()


def test_augmentation_is_seeded_and_visible():
    signal = np.random.default_rng(2).normal(0, 0.2, (12, 10 * FS))
    config = AugmentConfig(prob=1.0, p_rotation=1.0, p_noise=1.0, p_tint=1.0, p_drop_grid=0.0)
    clean = np.asarray(render_ecg(signal, FS, layout="1x1", dpi=50))
    first = np.asarray(render_ecg(signal, FS, layout="1x1", dpi=50, augment=config, seed=3))
    again = np.asarray(render_ecg(signal, FS, layout="1x1", dpi=50, augment=config, seed=3))
    other = np.asarray(render_ecg(signal, FS, layout="1x1", dpi=50, augment=config, seed=4))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert not np.array_equal(first, clean)
    # The tint only darkens the paper.
    assert np.median(first.astype(float)) <= np.median(clean.astype(float))


def test_augmentation_parts():
    rng = np.random.default_rng(0)
    assert sample_augmentation(AugmentConfig(prob=0.0), rng).is_identity
    no_grid = render_ecg(np.zeros((12, 100)), FS, layout="1x1", dpi=100, augment=Augmentation(drop_grid=True))
    pixels = np.asarray(no_grid).reshape(-1, 3)
    assert not np.all(pixels == DEFAULT_STYLE.minor_grid, axis=1).any()
    white = Image.new("RGB", (40, 30), (255, 255, 255))
    tinted = np.asarray(apply_augmentation(white, Augmentation(tint=(1.0, 0.9, 0.8))))
    assert tuple(tinted[0, 0]) == (255, 230, 204)
    noisy = np.asarray(apply_augmentation(Image.new("RGB", (64, 64), (128, 128, 128)), Augmentation(noise_std=10.0)))
    assert noisy.std() == pytest.approx(10.0, rel=0.15)
    rotated = apply_augmentation(
        Image.new("RGB", (64, 64), (0, 0, 0)), Augmentation(rotation_deg=10.0), (255, 255, 255)
    )
    assert tuple(np.asarray(rotated)[0, 0]) == (255, 255, 255)  # a corner filled with paper colour
    # Sampling always draws the same amount, so a skipped augmentation does not shift the next one.
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    sample_augmentation(AugmentConfig(prob=0.0), a)
    sample_augmentation(AugmentConfig(prob=1.0), b)
    assert a.random() == b.random()
    with pytest.raises(ValueError, match="prob"):
        AugmentConfig(prob=1.5)
