"""A fast parametric 12-lead ECG generator: Gaussian P, Q, R, S and T waves per beat.

Why not ``neurokit2.ecg_simulate(method="multileads")``: measured here it takes 1-2 s per 10-s record
(600 records would take 10-20 minutes on the 2-core demo machine), and its only rhythm controls are a
heart rate and its standard deviation, so it cannot make atrial fibrillation (irregular RR, no P
waves). This generator takes about a millisecond per record and controls every feature a class needs.

Model. Each beat is a sum of Gaussian waves placed relative to its R peak. Limb leads I and II come
from a frontal-plane projection of each wave (the QRS axis, P axis and T axis are drawn per record),
and III, aVR, aVL, aVF are derived from I and II by Einthoven's and Goldberger's equations, so the
six limb leads are exactly consistent. Precordial leads V1-V6 follow a table of typical R/S
progression. The QT interval shortens with the RR interval (Bazett), so a fast rhythm looks fast in
every wave, not only in R-R spacing. Records are randomised within their class: heart rate, axes,
amplitudes, baseline wander and noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from evl_kd_trainer.ecg.leads import STANDARD_LEADS

# Hexaxial angles (degrees) of limb leads I and II; the other limb leads are derived.
_ANGLE_I, _ANGLE_II = 0.0, 60.0
# Precordial (V1..V6) amplitudes in mV: R, S (negative), T, P. Typical R-wave progression.
_PRECORDIAL_R = np.array([0.25, 0.45, 0.8, 1.3, 1.25, 0.95])
_PRECORDIAL_S = np.array([-0.95, -1.25, -0.8, -0.45, -0.2, -0.1])
_PRECORDIAL_T = np.array([0.05, 0.35, 0.45, 0.4, 0.3, 0.25])
_PRECORDIAL_P = np.array([0.06, 0.08, 0.09, 0.1, 0.1, 0.09])


@dataclass(frozen=True)
class RhythmClass:
    """A rhythm the generator can make: its label code, the name used in answers, and its parameters.

    ``heart_rate`` is the range the record's mean (ventricular) rate is drawn from (bpm); ``rr_jitter`` the
    relative standard deviation of RR intervals (sinus: small, AF: large); ``p_waves`` whether atrial activity
    is organised as sinus P waves, else it is fibrillatory (f waves) or, with ``flutter``, a sawtooth of
    flutter waves conducted 2:1 (two F waves per beat, locked to the QRS).
    """

    code: str
    name: str
    heart_rate: tuple[float, float]
    rr_jitter: float
    p_waves: bool = True
    flutter: bool = False


RHYTHM_CLASSES: dict[str, RhythmClass] = {
    "SB": RhythmClass("SB", "Sinus bradycardia", (40.0, 48.0), 0.02),
    "NSR": RhythmClass("NSR", "Normal sinus rhythm", (66.0, 82.0), 0.025),
    "ST": RhythmClass("ST", "Sinus tachycardia", (128.0, 150.0), 0.015),
    "AF": RhythmClass("AF", "Atrial fibrillation", (90.0, 115.0), 0.22, p_waves=False),
    # Atrial flutter with 2:1 block: atria at 260-300/min, so the ventricles beat as fast and as regularly as in
    # sinus tachycardia; only the sawtooth baseline (no P waves) tells them apart, the classic pitfall. Not in the
    # default set: the demo adds it to give its models a class that takes a close look.
    "AFL": RhythmClass("AFL", "Atrial flutter", (130.0, 150.0), 0.008, p_waves=False, flutter=True),
}
DEFAULT_CLASSES: tuple[str, ...] = ("SB", "NSR", "ST", "AF")


@dataclass(frozen=True)
class SimulatedECG:
    """A simulated record: ``signal`` (12 x samples, mV, :data:`STANDARD_LEADS` order) and its truth."""

    signal: np.ndarray
    sampling_rate: float
    rhythm: RhythmClass
    heart_rate: float
    r_peaks: np.ndarray  # R-peak times in seconds within the record
    lead_names: tuple[str, ...] = STANDARD_LEADS


def get_rhythm_class(code: str) -> RhythmClass:
    if code not in RHYTHM_CLASSES:
        raise ValueError(f"Unknown rhythm class {code!r}; known: {sorted(RHYTHM_CLASSES)}.")
    return RHYTHM_CLASSES[code]


def simulate_ecg(
    rhythm: str | RhythmClass,
    rng: np.random.Generator,
    *,
    duration: float = 10.0,
    sampling_rate: float = 250.0,
    noise: bool = True,
) -> SimulatedECG:
    """Simulate ``duration`` seconds of a 12-lead ECG of class ``rhythm`` at ``sampling_rate`` Hz."""
    rhythm = get_rhythm_class(rhythm) if isinstance(rhythm, str) else rhythm
    if duration <= 0 or sampling_rate <= 0:
        raise ValueError(f"duration and sampling_rate must be positive, got {duration}, {sampling_rate}.")
    heart_rate = float(rng.uniform(*rhythm.heart_rate))
    beats = _beat_times(rhythm, heart_rate, duration, rng)
    rr = np.diff(beats)
    rr = np.append(rr, rr[-1])  # each beat's following RR sets its QT
    t = np.arange(round(duration * sampling_rate)) / sampling_rate

    waves = _wave_shapes(t, beats, rr, rhythm.p_waves)  # name -> (samples,)
    amplitudes = _lead_amplitudes(rng, rhythm.p_waves)  # name -> (12,)
    signal = np.zeros((12, t.size))
    for name, shape in waves.items():
        signal += amplitudes[name][:, None] * shape[None, :]
    if rhythm.flutter:
        signal += _flutter_waves(t, beats, rng)
    elif not rhythm.p_waves:
        signal += _fibrillatory_waves(t, rng)
    signal *= rng.uniform(0.75, 1.25)
    if noise:
        signal += _baseline_wander(t, rng) + rng.normal(0.0, rng.uniform(0.004, 0.025), size=signal.shape)
    inside = beats[(beats >= 0) & (beats < duration)]
    return SimulatedECG(
        signal=signal, sampling_rate=sampling_rate, rhythm=rhythm, heart_rate=heart_rate, r_peaks=inside
    )


def _beat_times(rhythm: RhythmClass, heart_rate: float, duration: float, rng: np.random.Generator) -> np.ndarray:
    """R-peak times covering [-1.5 s, duration + 1.5 s], so waves near the edges are whole."""
    mean_rr = 60.0 / heart_rate
    count = math.ceil((duration + 3.0) / (mean_rr * 0.6)) + 2
    if rhythm.flutter:
        # Fixed 2:1 conduction: the ventricles follow the (very regular) flutter circuit.
        rr = mean_rr * (1.0 + rhythm.rr_jitter * rng.standard_normal(count))
    elif rhythm.p_waves:
        # Sinus: small beat-to-beat jitter plus a slow respiratory modulation.
        phase, resp = rng.uniform(0, 2 * math.pi), rng.uniform(0.2, 0.33)
        k = np.arange(count)
        rr = mean_rr * (
            1.0
            + rhythm.rr_jitter * rng.standard_normal(count)
            + 0.02 * np.sin(phase + k * resp * mean_rr * 2 * math.pi)
        )
    else:
        # Atrial fibrillation: irregularly irregular, log-normal RR around the mean.
        rr = mean_rr * np.exp(rhythm.rr_jitter * rng.standard_normal(count) - rhythm.rr_jitter**2 / 2)
    rr = np.clip(rr, 0.28, 2.0)
    return -1.5 + rng.uniform(0, mean_rr) + np.concatenate(([0.0], np.cumsum(rr)))


def _gaussians(t: np.ndarray, centers: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Sum over beats of unit Gaussians; only samples within 5 widths of each centre are computed."""
    out = np.zeros_like(t)
    if t.size < 2:
        return out
    fs = 1.0 / (t[1] - t[0])
    for center, width in zip(centers, widths):
        lo = max(0, int((center - 5 * width - t[0]) * fs))
        hi = min(t.size, int((center + 5 * width - t[0]) * fs) + 2)
        if lo < hi:
            out[lo:hi] += np.exp(-0.5 * ((t[lo:hi] - center) / width) ** 2)
    return out


def _wave_shapes(t: np.ndarray, beats: np.ndarray, rr: np.ndarray, p_waves: bool) -> dict[str, np.ndarray]:
    """Unit-amplitude wave trains; lead amplitudes are applied afterwards."""
    qt = 0.40 * np.sqrt(np.clip(rr, 0.3, 2.0))  # Bazett with QTc = 400 ms
    ones = np.ones_like(beats)
    shapes = {
        "Q": _gaussians(t, beats - 0.028, 0.008 * ones),
        "R": _gaussians(t, beats, 0.011 * ones),
        "S": _gaussians(t, beats + 0.03, 0.011 * ones),
        "T": _gaussians(t, beats + qt - 0.09, 0.1 * qt),
    }
    if p_waves:
        shapes["P"] = _gaussians(t, beats - 0.16, 0.022 * ones)
    return shapes


def _lead_amplitudes(rng: np.random.Generator, p_waves: bool) -> dict[str, np.ndarray]:
    """Per-wave amplitudes (mV) for the 12 leads, from random frontal axes and the precordial table."""
    qrs_axis = rng.uniform(15.0, 80.0)
    size = rng.uniform(0.9, 1.6)
    limb: dict[str, tuple[float, float]] = {}
    for name, angle in (("I", _ANGLE_I), ("II", _ANGLE_II)):
        p = math.cos(math.radians(qrs_axis - angle))
        limb[name] = (
            -0.08 * size * max(p, 0.0),  # Q
            size * (0.1 + max(p, 0.0)),  # R
            -size * (0.12 + 0.7 * max(-p, 0.0)),  # S
        )
    t_axis, p_axis = qrs_axis + rng.uniform(-20.0, 20.0), rng.uniform(30.0, 70.0)
    t_size, p_size = rng.uniform(0.2, 0.4), rng.uniform(0.1, 0.2)
    amps: dict[str, np.ndarray] = {}
    for index, wave in enumerate(("Q", "R", "S")):
        amps[wave] = _limb_and_precordial(limb["I"][index], limb["II"][index], _precordial(wave, rng))
    amps["T"] = _limb_and_precordial(
        t_size * math.cos(math.radians(t_axis - _ANGLE_I)),
        t_size * math.cos(math.radians(t_axis - _ANGLE_II)),
        _PRECORDIAL_T * rng.uniform(0.7, 1.3, size=6),
    )
    if p_waves:
        amps["P"] = _limb_and_precordial(
            p_size * math.cos(math.radians(p_axis - _ANGLE_I)),
            p_size * math.cos(math.radians(p_axis - _ANGLE_II)),
            _PRECORDIAL_P * rng.uniform(0.7, 1.3, size=6),
        )
    return amps


def _precordial(wave: str, rng: np.random.Generator) -> np.ndarray:
    jitter = rng.uniform(0.75, 1.25, size=6)
    if wave == "R":
        return _PRECORDIAL_R * jitter
    if wave == "S":
        return _PRECORDIAL_S * jitter
    return np.array([0.0, 0.0, 0.0, -0.05, -0.08, -0.08]) * jitter  # small septal q in V4-V6


def _limb_and_precordial(lead_i: float, lead_ii: float, precordial: np.ndarray) -> np.ndarray:
    """Amplitudes in :data:`STANDARD_LEADS` order: III, aVR, aVL, aVF from I and II (Einthoven/Goldberger)."""
    lead_iii = lead_ii - lead_i
    return np.array(
        [
            lead_i,
            lead_ii,
            lead_iii,
            -(lead_i + lead_ii) / 2,
            lead_i - lead_ii / 2,
            lead_ii - lead_i / 2,
            *precordial,
        ]
    )


def _fibrillatory_waves(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Chaotic atrial activity: a few 4-9 Hz components, strongest in V1 and the inferior leads."""
    f = np.zeros_like(t)
    for _ in range(3):
        freq = rng.uniform(4.0, 9.0)
        f += rng.uniform(0.3, 1.0) * np.sin(2 * math.pi * freq * t + rng.uniform(0, 2 * math.pi))
    f *= rng.uniform(0.03, 0.07) / 1.5
    weights = np.array([0.4, 0.9, 0.8, 0.6, 0.3, 0.85, 1.0, 0.7, 0.5, 0.4, 0.3, 0.3])
    return weights[:, None] * f[None, :]


def _flutter_waves(t: np.ndarray, beats: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Typical (counter-clockwise) flutter waves: a sawtooth of slow descents and quick returns in the inferior leads.

    Two flutter cycles per RR interval (2:1 block), each starting at a fixed delay before its beat, so the waves
    march through the QRS and T waves at exactly twice the ventricular rate. The flutter vector points up the
    frontal plane (negative sawtooth in II, III, aVF; about nothing in I; the opposite polarity in aVR, aVL and V1).
    """
    starts = np.sort(np.concatenate((beats, (beats[:-1] + beats[1:]) / 2))) - rng.uniform(0.06, 0.1)
    index = np.clip(np.searchsorted(starts, t, side="right") - 1, 0, starts.size - 2)
    phase = (t - starts[index]) / (starts[index + 1] - starts[index])
    descent = rng.uniform(0.65, 0.8)  # fraction of the cycle spent on the slow downslope
    saw = np.where(phase < descent, 1.0 - 2.0 * phase / descent, -1.0 + 2.0 * (phase - descent) / (1.0 - descent))
    saw *= rng.uniform(0.12, 0.2)  # half the peak-to-peak amplitude in lead II, mV (0.24-0.4 mV F waves)
    precordial = np.array([-0.8, -0.4, 0.1, 0.1, 0.1, 0.1])
    weights = _limb_and_precordial(rng.uniform(-0.1, 0.1), 1.0, precordial)
    return weights[:, None] * saw[None, :]


def _baseline_wander(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Slow respiratory drift, a different amplitude and phase per lead."""
    freq = rng.uniform(0.12, 0.4)
    amplitude = rng.uniform(0.0, 0.12, size=(12, 1))
    phase = rng.uniform(0, 2 * math.pi, size=(12, 1))
    return amplitude * np.sin(2 * math.pi * freq * t[None, :] + phase)
