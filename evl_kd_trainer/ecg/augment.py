"""Seeded picture augmentations in the spirit of ECGInstruct: small rotation, pixel noise, paper tint, no grid.

ECGInstruct mixed photographed-looking ECGs about 1:1 with clean renderings, so a model does not
learn that every ECG is a perfect printout. Sampling (:func:`sample_augmentation`) is separate from
applying (:func:`apply_augmentation`) so that a dataset can record exactly what was done to each
picture, and so that "drop the grid" can act at render time, where the grid is drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class AugmentConfig:
    """How often and how strongly to augment.

    ``prob`` is the chance that a picture is augmented at all; an augmented picture then gets each
    effect with its own probability. Ranges are uniform.
    """

    prob: float = 0.5
    p_rotation: float = 0.6
    max_rotation_deg: float = 3.0
    p_noise: float = 0.5
    noise_std: tuple[float, float] = (3.0, 12.0)
    p_tint: float = 0.5
    max_tint: float = 0.12
    p_drop_grid: float = 0.05

    def __post_init__(self) -> None:
        for name in ("prob", "p_rotation", "p_noise", "p_tint", "p_drop_grid"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"AugmentConfig.{name} must be a probability in [0, 1], got {value}.")
        low, high = self.noise_std
        if not 0.0 <= low <= high:
            raise ValueError(
                f"AugmentConfig.noise_std must be (low, high) with 0 <= low <= high, got {self.noise_std}."
            )
        if self.max_rotation_deg < 0 or not 0.0 <= self.max_tint < 1.0:
            raise ValueError("AugmentConfig: max_rotation_deg must be >= 0 and max_tint in [0, 1).")


@dataclass(frozen=True)
class Augmentation:
    """One sampled augmentation: what :func:`apply_augmentation` (and the renderer, for the grid) will do."""

    rotation_deg: float = 0.0
    noise_std: float = 0.0
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    drop_grid: bool = False
    noise_seed: int = 0

    @property
    def is_identity(self) -> bool:
        return (
            self.rotation_deg == 0.0 and self.noise_std == 0.0 and self.tint == (1.0, 1.0, 1.0) and not self.drop_grid
        )

    def describe(self) -> dict[str, object]:
        """A JSON-friendly summary (for manifests)."""
        return {
            "rotation_deg": round(self.rotation_deg, 3),
            "noise_std": round(self.noise_std, 3),
            "tint": [round(v, 4) for v in self.tint],
            "drop_grid": self.drop_grid,
        }


def sample_augmentation(config: AugmentConfig, rng: np.random.Generator) -> Augmentation:
    """Draw an :class:`Augmentation` (the identity with probability ``1 - config.prob``).

    The same number of values is drawn whatever the outcome, so one picture's augmentation never
    shifts the random stream of the next.
    """
    draws = rng.random(6)
    rotation = rng.uniform(-config.max_rotation_deg, config.max_rotation_deg)
    noise = rng.uniform(*config.noise_std)
    tint = rng.uniform(-config.max_tint, 0.0, size=3)
    noise_seed = int(rng.integers(0, 2**31 - 1))
    if draws[0] >= config.prob:
        return Augmentation()
    # A tint darkens the paper unevenly per channel (yellowed paper, a greyish scan); never brightens.
    return Augmentation(
        rotation_deg=float(rotation) if draws[1] < config.p_rotation else 0.0,
        noise_std=float(noise) if draws[2] < config.p_noise else 0.0,
        tint=tuple(float(1.0 + t) for t in tint) if draws[3] < config.p_tint else (1.0, 1.0, 1.0),
        drop_grid=bool(draws[4] < config.p_drop_grid),
        noise_seed=noise_seed,
    )


def apply_augmentation(
    image: Image.Image, augmentation: Augmentation, paper_color: tuple[int, int, int] = (255, 255, 255)
) -> Image.Image:
    """Rotate, tint and add noise (in that order) to an RGB picture. The grid is the renderer's business."""
    if augmentation.rotation_deg:
        image = image.rotate(
            augmentation.rotation_deg, resample=Image.Resampling.BILINEAR, expand=False, fillcolor=paper_color
        )
    if augmentation.tint == (1.0, 1.0, 1.0) and not augmentation.noise_std:
        return image
    pixels = np.asarray(image, dtype=np.float32)
    pixels = pixels * np.asarray(augmentation.tint, dtype=np.float32)
    if augmentation.noise_std:
        rng = np.random.default_rng(augmentation.noise_seed)
        pixels = pixels + rng.normal(0.0, augmentation.noise_std, size=pixels.shape[:2])[..., None]
    return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8))
