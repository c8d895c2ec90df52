"""Draw a multi-lead ECG signal as a printed ECG: red millimetre grid, black trace, lead labels.

Geometry is in paper millimetres, as on a real printout: time runs at ``speed`` mm/s (25 by default),
voltage at ``gain`` mm/mV (10), the minor grid is 1 mm and the major grid 5 mm, and every row starts
with a 1 mV calibration pulse 0.2 s wide. Millimetres become pixels at ``dpi`` (isotropic) or, when a
``size`` is asked for, at whatever scale fills it on each axis (the picture is then stretched, but the
grid still counts millimetres). :class:`PageGeometry` returns that mapping so tests and callers can
find every lead on the picture.

Why PIL rather than matplotlib: exact, predictable pixel positions (the tests measure them), and about
10x faster, which matters when a converter renders 20k records. Pictures smaller than 4 px/mm are
drawn larger and box-downsampled, so thin grid lines fade to a tint instead of aliasing into stripes
while the trace keeps at least one output pixel of width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from evl_kd_trainer.ecg.augment import Augmentation, AugmentConfig, apply_augmentation, sample_augmentation
from evl_kd_trainer.ecg.layouts import Layout, get_layout
from evl_kd_trainer.ecg.leads import STANDARD_LEADS, canonical_lead, lead_index

MM_PER_INCH = 25.4
# Paper margins and the calibration pulse area, in mm. The trace starts at X0_MM, a major grid line.
MARGIN_MM = 5.0
X0_MM = 15.0
CAL_START_MM = 5.0
CAL_DURATION_S = 0.2
CAL_MV = 1.0
# Below this many render pixels per mm, draw at an integer multiple and box-downsample.
MIN_RENDER_PX_PER_MM = 3.0
MAX_SUPERSAMPLE = 16


@dataclass(frozen=True)
class PaperStyle:
    """Colours (RGB) and stroke widths (mm, with a floor in output pixels for the trace)."""

    paper: tuple[int, int, int] = (255, 253, 252)
    minor_grid: tuple[int, int, int] = (250, 200, 200)
    major_grid: tuple[int, int, int] = (232, 110, 110)
    trace: tuple[int, int, int] = (0, 0, 0)
    text: tuple[int, int, int] = (0, 0, 0)
    trace_width_mm: float = 0.3
    min_trace_width_px: float = 1.0
    major_width_mm: float = 0.2
    label_height_mm: float = 3.5


DEFAULT_STYLE = PaperStyle()


@dataclass(frozen=True)
class Panel:
    """One lead on the page: its row, the time window it shows and where that lands on paper (mm)."""

    lead: str
    row: int
    t_start: float
    t_end: float
    x_start_mm: float
    x_end_mm: float
    row_top_mm: float
    baseline_mm: float


@dataclass(frozen=True)
class PageGeometry:
    """Where things are on the rendered picture; paper mm -> pixels is ``mm * px_per_mm`` on each axis."""

    width_px: int
    height_px: int
    paper_width_mm: float
    paper_height_mm: float
    px_per_mm_x: float
    px_per_mm_y: float
    speed_mm_per_s: float
    gain_mm_per_mv: float
    x0_mm: float
    calibration_start_mm: float
    panels: tuple[Panel, ...]
    supersample: int

    def x_px(self, mm: float) -> float:
        return mm * self.px_per_mm_x

    def y_px(self, mm: float) -> float:
        return mm * self.px_per_mm_y

    def time_to_x_px(self, seconds: float) -> float:
        """Pixel column of time ``seconds`` (every row shares the record's time axis)."""
        return self.x_px(self.x0_mm + seconds * self.speed_mm_per_s)

    def panels_for(self, lead: str) -> list[Panel]:
        return [panel for panel in self.panels if panel.lead == lead]


def paper_size_mm(layout: Layout, duration: float, speed: float) -> tuple[float, float]:
    """(width, height) of the page in mm: margins, calibration area, ``duration * speed`` of trace."""
    width = X0_MM + duration * speed + MARGIN_MM
    height = 2 * MARGIN_MM + layout.row_height_mm * len(layout.rows)
    return width, height


def render_ecg(
    signal: np.ndarray,
    sampling_rate: float,
    lead_names: Sequence[str] = STANDARD_LEADS,
    *,
    layout: str | Layout = "3x4",
    dpi: float | None = 100.0,
    size: tuple[int, int] | None = None,
    duration: float = 10.0,
    speed: float = 25.0,
    gain: float = 10.0,
    grid: bool = True,
    labels: bool = True,
    calibration: bool = True,
    style: PaperStyle = DEFAULT_STYLE,
    augment: AugmentConfig | Augmentation | None = None,
    seed: int | np.random.Generator | None = None,
    return_geometry: bool = False,
) -> Image.Image | tuple[Image.Image, PageGeometry]:
    """Render ``signal`` (leads x samples, in mV) as an RGB ECG picture.

    Args:
        signal: array ``(len(lead_names), num_samples)`` in millivolts; NaN samples leave a gap.
        sampling_rate: samples per second.
        lead_names: names of the signal's rows in any common spelling (``AVR``, ``DII``...). The
            layout's leads must all be present; extra leads are ignored.
        layout: ``"3x4"`` (with a lead II rhythm strip), ``"6x2"``, ``"12x1"``, ``"1x1"`` (lead II
            only) or a :class:`Layout`.
        dpi: pixels per inch of paper (isotropic); ignored when ``size`` is given.
        size: ``(width, height)`` in pixels; each axis is scaled to fill it.
        duration: seconds of record shown (a shorter signal leaves the rest blank; a longer one is cut).
        speed, gain: paper speed (mm/s) and voltage gain (mm/mV).
        grid, labels, calibration: draw the grid, the lead names, the 1 mV calibration pulses.
        augment: an :class:`AugmentConfig` (sampled with ``seed``) or a fixed :class:`Augmentation`.
            Rotation moves things off the returned geometry, which describes the unaugmented page.
        return_geometry: also return the :class:`PageGeometry`.
    """
    layout = get_layout(layout)
    signal = _check_signal(signal, sampling_rate, lead_names)
    rows_of = lead_index(lead_names)
    missing = [lead for lead in layout.leads if lead not in rows_of]
    if missing:
        raise ValueError(f"Layout {layout.name!r} needs lead(s) {missing}; the signal has {list(lead_names)}.")
    if duration <= 0 or speed <= 0 or gain <= 0:
        raise ValueError(f"duration, speed and gain must be positive; got {duration}, {speed}, {gain}.")

    augmentation = _resolve_augmentation(augment, seed)
    if augmentation is not None and augmentation.drop_grid:
        grid = False

    geometry = _page_geometry(layout, duration, speed, gain, dpi, size)
    s = geometry.supersample
    render_ppm = (geometry.px_per_mm_x * s, geometry.px_per_mm_y * s)
    canvas_size = (geometry.width_px * s, geometry.height_px * s)
    background = _background(canvas_size, render_ppm, geometry.paper_width_mm, geometry.paper_height_mm, grid, style)
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    trace_width = max(1, round(style.trace_width_mm * min(render_ppm)), round(style.min_trace_width_px * s))

    for row, row_leads in enumerate(layout.rows):
        baseline = _row_baseline_mm(layout, row)
        if calibration:
            _draw_calibration(draw, baseline, speed, gain, render_ppm, trace_width, style)
        for k in range(1, len(row_leads)):
            t_edge = duration * k / len(row_leads)
            x = (X0_MM + t_edge * speed) * render_ppm[0]
            half = 2.5 * render_ppm[1]
            y = baseline * render_ppm[1]
            draw.line([(x, y - half), (x, y + half)], fill=style.trace, width=trace_width)

    for panel in geometry.panels:
        values = signal[rows_of[panel.lead]]
        _draw_trace(draw, values, sampling_rate, panel, speed, gain, render_ppm, trace_width, style)
        if labels:
            _draw_label(draw, panel, render_ppm, style)

    if s > 1:
        image = image.reduce(s)  # box average over s x s blocks: the canvas is exactly s times the picture
    if augmentation is not None:
        image = apply_augmentation(image, augmentation, style.paper)
    return (image, geometry) if return_geometry else image


def _check_signal(signal: np.ndarray, sampling_rate: float, lead_names: Sequence[str]) -> np.ndarray:
    array = np.asarray(signal, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"ECG signal must be 2-D (leads x samples), got shape {array.shape}.")
    if array.shape[0] != len(lead_names):
        hint = " (pass the transpose: rows are leads)" if array.shape[1] == len(lead_names) else ""
        raise ValueError(f"ECG signal has {array.shape[0]} rows but {len(lead_names)} lead names{hint}.")
    if not sampling_rate or sampling_rate <= 0 or not math.isfinite(sampling_rate):
        raise ValueError(f"sampling_rate must be a positive number, got {sampling_rate!r}.")
    if np.isinf(array).any():
        raise ValueError("ECG signal contains infinite values.")
    return array


def _resolve_augmentation(
    augment: AugmentConfig | Augmentation | None, seed: int | np.random.Generator | None
) -> Augmentation | None:
    if augment is None or isinstance(augment, Augmentation):
        return augment
    if isinstance(augment, AugmentConfig):
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        return sample_augmentation(augment, rng)
    raise TypeError(f"augment must be an AugmentConfig, an Augmentation or None, got {type(augment).__name__}.")


def _row_baseline_mm(layout: Layout, row: int) -> float:
    """Baseline 60% down the row, on a whole millimetre (QRS complexes point mostly up)."""
    return MARGIN_MM + row * layout.row_height_mm + round(0.6 * layout.row_height_mm)


def _page_geometry(
    layout: Layout, duration: float, speed: float, gain: float, dpi: float | None, size: tuple[int, int] | None
) -> PageGeometry:
    paper_w, paper_h = paper_size_mm(layout, duration, speed)
    if size is not None:
        width, height = (int(v) for v in size)
        if width < 8 or height < 8:
            raise ValueError(f"Image size must be at least 8x8 pixels, got {size}.")
        ppm_x, ppm_y = width / paper_w, height / paper_h
    else:
        if dpi is None or dpi <= 0:
            raise ValueError(f"Give a positive dpi or a size, got dpi={dpi!r}.")
        ppm_x = ppm_y = dpi / MM_PER_INCH
        width, height = round(paper_w * ppm_x), round(paper_h * ppm_y)
    supersample = min(MAX_SUPERSAMPLE, max(1, math.ceil(MIN_RENDER_PX_PER_MM / min(ppm_x, ppm_y))))
    panels = []
    for row, row_leads in enumerate(layout.rows):
        span = duration / len(row_leads)
        for k, lead in enumerate(row_leads):
            t0, t1 = k * span, (k + 1) * span
            panels.append(
                Panel(
                    lead=canonical_lead(lead),
                    row=row,
                    t_start=t0,
                    t_end=t1,
                    x_start_mm=X0_MM + t0 * speed,
                    x_end_mm=X0_MM + t1 * speed,
                    row_top_mm=MARGIN_MM + row * layout.row_height_mm,
                    baseline_mm=_row_baseline_mm(layout, row),
                )
            )
    return PageGeometry(
        width_px=width,
        height_px=height,
        paper_width_mm=paper_w,
        paper_height_mm=paper_h,
        px_per_mm_x=ppm_x,
        px_per_mm_y=ppm_y,
        speed_mm_per_s=speed,
        gain_mm_per_mv=gain,
        x0_mm=X0_MM,
        calibration_start_mm=CAL_START_MM,
        panels=tuple(panels),
        supersample=supersample,
    )


@lru_cache(maxsize=32)
def _background_cached(
    canvas: tuple[int, int], ppm: tuple[float, float], paper_mm: tuple[float, float], grid: bool, style: PaperStyle
) -> np.ndarray:
    width, height = canvas
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = style.paper
    if not grid:
        return image
    major_px = (max(1, round(style.major_width_mm * ppm[0])), max(1, round(style.major_width_mm * ppm[1])))
    for major in (False, True):
        color = style.major_grid if major else style.minor_grid
        for axis, (length, scale, limit) in enumerate(((width, ppm[0], paper_mm[0]), (height, ppm[1], paper_mm[1]))):
            marks = np.arange(0, int(math.floor(limit)) + 1)
            if major:
                marks = marks[marks % 5 == 0]
            line = major_px[axis] if major else 1
            starts = np.floor(marks * scale).astype(int) - (line - 1) // 2
            index = (starts[:, None] + np.arange(line)[None, :]).ravel()
            index = index[(index >= 0) & (index < length)]
            if axis == 0:
                image[:, index] = color
            else:
                image[index, :] = color
    return image


def _background(
    canvas: tuple[int, int],
    ppm: tuple[float, float],
    paper_w: float,
    paper_h: float,
    grid: bool,
    style: PaperStyle,
) -> np.ndarray:
    """The paper with its grid, cached per page geometry (most datasets reuse one geometry)."""
    return _background_cached(canvas, ppm, (paper_w, paper_h), grid, style).copy()


def _draw_calibration(
    draw: ImageDraw.ImageDraw,
    baseline_mm: float,
    speed: float,
    gain: float,
    ppm: tuple[float, float],
    width: int,
    style: PaperStyle,
) -> None:
    """A 1 mV x 0.2 s rectangular pulse, 1 mm of flat baseline either side."""
    rise = CAL_START_MM + 1.0
    fall = rise + CAL_DURATION_S * speed
    top = baseline_mm - CAL_MV * gain
    path_mm = [
        (CAL_START_MM, baseline_mm),
        (rise, baseline_mm),
        (rise, top),
        (fall, top),
        (fall, baseline_mm),
        (fall + 1.0, baseline_mm),
    ]
    draw.line([(x * ppm[0], y * ppm[1]) for x, y in path_mm], fill=style.trace, width=width)


def _draw_trace(
    draw: ImageDraw.ImageDraw,
    values: np.ndarray,
    sampling_rate: float,
    panel: Panel,
    speed: float,
    gain: float,
    ppm: tuple[float, float],
    width: int,
    style: PaperStyle,
) -> None:
    first = math.ceil(panel.t_start * sampling_rate - 1e-9)
    last = min(len(values), math.ceil(panel.t_end * sampling_rate - 1e-9))
    if last <= first:
        return
    index = np.arange(first, last)
    x = (X0_MM + index / sampling_rate * speed) * ppm[0]
    y = (panel.baseline_mm - values[first:last] * gain) * ppm[1]
    finite = np.isfinite(y)
    # Split at NaN gaps; each run is one polyline.
    edges = np.flatnonzero(np.diff(np.concatenate(([0], finite.view(np.int8), [0]))))
    for start, stop in zip(edges[::2], edges[1::2]):
        points = np.stack([x[start:stop], y[start:stop]], axis=1).ravel().tolist()
        if stop - start == 1:
            draw.point(points, fill=style.trace)
        else:
            draw.line(points, fill=style.trace, width=width)


@lru_cache(maxsize=16)
def _font(pixel_size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=pixel_size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _draw_label(draw: ImageDraw.ImageDraw, panel: Panel, ppm: tuple[float, float], style: PaperStyle) -> None:
    pixel_size = max(6, round(style.label_height_mm * ppm[1]))
    x = (panel.x_start_mm + 1.0) * ppm[0]
    y = (panel.row_top_mm + 1.0) * ppm[1]
    draw.text((x, y), panel.lead, fill=style.text, font=_font(pixel_size))
