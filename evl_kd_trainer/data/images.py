"""Image checks and decoding that a bad file cannot turn into a crash, a memory spike or silently wrong pixels.

* :func:`read_image_header` opens a file the cheap way (PIL reads the header, not the pixels): format, size and
  mode, the pixel-count and aspect-ratio limits, and, for PNG, that the file still ends with its ``IEND`` chunk
  (a truncated download does not). This is what ``load_ecginstruct``'s default ``check_images="header"`` runs.
* :func:`load_image` decodes one image for the collator. The limits are checked *before* decoding; an image
  larger than ``ImageLimits.decode_pixels`` is decoded reduced (JPEG ``draft``: the decoder itself skips the
  detail) or reduced right after decoding, so the processors never receive a 100-Mpx array. 16-bit and float
  images (``I;16``, ``I``, ``F``) are scaled to 8 bits by their own value range: ``convert("RGB")`` would clamp
  every value above 255 (nearly all of a 16-bit image) to white.

Every failure is a :class:`BadImageError` (a ``ValueError``) whose ``reason`` is one of the reason constants
below, so the loader can count it per reason and the collator can skip the sample.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import dataclass
from typing import Any

# Reasons an image is refused (the keys of `LoadReport.skipped` / the collator's `dropped_bad_image` messages).
MISSING_IMAGE = "missing_image"
UNREADABLE_IMAGE = "unreadable_image"
IMAGE_TOO_LARGE = "image_too_large"
IMAGE_ASPECT_RATIO = "image_aspect_ratio"

# PIL's own decompression-bomb threshold (it warns above it and refuses above twice it).
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
# Qwen-VL's `smart_resize` refuses an aspect ratio above 200.
DEFAULT_MAX_ASPECT_RATIO = 200.0
# Qwen3-VL's default `longest_edge` (4096 x 4096): no supported processor uses more pixels than this, so decoding
# at most this many loses nothing the model would see.
DEFAULT_DECODE_PIXELS = 4096 * 4096

# Modes `load_image` turns into RGB; anything else (LAB, HSV, multi-band TIFF oddities) is refused at the header.
HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
SUPPORTED_MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", *HIGH_DEPTH_MODES)
_PNG_END = b"IEND"


class BadImageError(ValueError):
    """An image that cannot be trained on; ``reason`` is one of this module's reason constants."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


@dataclass(frozen=True)
class ImageLimits:
    """Limits every image is checked against before its pixels are decoded.

    Args:
        max_pixels: largest ``width * height`` accepted; larger files are refused (decompression bombs). PIL's own
            check (it refuses more than twice ``PIL.Image.MAX_IMAGE_PIXELS``) applies as well.
        max_aspect_ratio: largest ``long side / short side`` accepted (Qwen-VL's processor fails above 200).
        decode_pixels: images with more pixels are decoded reduced (JPEG draft) or reduced by an integer factor
            right after decoding, to at most about this many pixels.
    """

    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO
    decode_pixels: int = DEFAULT_DECODE_PIXELS

    def __post_init__(self) -> None:
        if self.max_pixels < 1:
            raise ValueError(f"ImageLimits.max_pixels must be >= 1, got {self.max_pixels}.")
        if not self.max_aspect_ratio >= 1:
            raise ValueError(f"ImageLimits.max_aspect_ratio must be >= 1, got {self.max_aspect_ratio}.")
        if self.decode_pixels < 1:
            raise ValueError(f"ImageLimits.decode_pixels must be >= 1, got {self.decode_pixels}.")


def check_geometry(size: tuple[int, int], mode: str, limits: ImageLimits, where: str) -> None:
    """Refuse an empty, too large or too elongated image, or a mode that cannot become RGB, by its header alone."""
    width, height = size
    if width < 1 or height < 1:
        raise BadImageError(UNREADABLE_IMAGE, f"image {where} has no pixels ({width}x{height})")
    if width * height > limits.max_pixels:
        raise BadImageError(
            IMAGE_TOO_LARGE, f"image {where} has {width}x{height} = {width * height} pixels > {limits.max_pixels}"
        )
    ratio = max(width, height) / min(width, height)
    if ratio > limits.max_aspect_ratio:
        raise BadImageError(
            IMAGE_ASPECT_RATIO,
            f"image {where} is {width}x{height}: aspect ratio {ratio:.1f} > {limits.max_aspect_ratio:g}",
        )
    if mode not in SUPPORTED_MODES:
        raise BadImageError(UNREADABLE_IMAGE, f"image {where} has mode {mode!r}, which cannot be converted to RGB")


def _open(source: Any, where: str) -> Any:
    """``PIL.Image.open`` (lazy: header only) with PIL's errors turned into a :class:`BadImageError`."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit decides, with a reason
        try:
            return Image.open(source)
        except Image.DecompressionBombError as error:
            raise BadImageError(IMAGE_TOO_LARGE, f"image {where}: {error}") from error
        except Exception as error:  # UnidentifiedImageError, OSError, SyntaxError, ValueError, ...
            raise BadImageError(UNREADABLE_IMAGE, f"cannot decode image {where}: {error}") from error


@dataclass(frozen=True)
class ImageHeader:
    format: str | None
    size: tuple[int, int]
    mode: str


def read_image_header(path: str, limits: ImageLimits | None = None) -> ImageHeader:
    """Format, size and mode of the image file ``path``, checked against ``limits`` without decoding its pixels."""
    limits = limits or ImageLimits()
    try:
        file_size = os.path.getsize(path)
    except OSError as error:
        raise BadImageError(MISSING_IMAGE, f"cannot stat image {path}: {error}") from error
    if file_size == 0:
        raise BadImageError(UNREADABLE_IMAGE, f"image file {path} is empty (0 bytes)")
    with _open(path, path) as image:
        header = ImageHeader(format=image.format, size=image.size, mode=image.mode)
    check_geometry(header.size, header.mode, limits, path)
    if header.format == "PNG":
        # A PNG ends with its IEND chunk (12 bytes); a cut file does not. Trailing bytes after IEND are tolerated.
        with open(path, "rb") as handle:
            handle.seek(max(0, file_size - 64))
            if _PNG_END not in handle.read():
                raise BadImageError(UNREADABLE_IMAGE, f"image {path} is truncated (the PNG has no IEND chunk)")
    return header


def to_rgb(image: Any) -> Any:
    """``image`` as 8-bit RGB; 16-bit and float images are scaled by their value range, not clamped."""
    from PIL import Image

    if image.mode == "RGB":
        return image
    if image.mode not in HIGH_DEPTH_MODES:
        return image.convert("RGB")
    import numpy as np

    values = np.asarray(image).astype(np.float32)
    finite = np.isfinite(values)
    low, high = (float(values[finite].min()), float(values[finite].max())) if finite.any() else (0.0, 0.0)
    scale = 255.0 / (high - low) if high > low else 0.0
    scaled = np.where(finite, (values - low) * scale, 0.0)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L").convert("RGB")


def _reduce(image: Any, limits: ImageLimits) -> Any:
    width, height = image.size
    if width * height <= limits.decode_pixels:
        return image
    factor = math.ceil(math.sqrt(width * height / limits.decode_pixels))
    return image.reduce(factor)


def decode_image(source: Any, where: str, limits: ImageLimits | None = None) -> Any:
    """Decode the image file (or file object) ``source`` to RGB within ``limits``; ``where`` names it in errors."""
    limits = limits or ImageLimits()
    try:
        decoded = _open(source, where)
        check_geometry(decoded.size, decoded.mode, limits, where)
        width, height = decoded.size
        if width * height > limits.decode_pixels:
            # JPEG: the decoder scales by 1/2..1/8 while decoding; other formats ignore the request.
            shrink = math.sqrt(width * height / limits.decode_pixels)
            decoded.draft("RGB", (math.ceil(width / shrink), math.ceil(height / shrink)))
        decoded.load()  # Image.open is lazy: force the read here, where the error can name the image
        return _reduce(to_rgb(decoded), limits)
    except BadImageError:
        raise
    except Exception as error:  # PIL raises OSError (truncated), SyntaxError, ValueError, struct.error, ...
        raise BadImageError(UNREADABLE_IMAGE, f"cannot decode image {where}: {error}") from error


def load_image(image: Any, *, record_id: Any = None, index: int = 0, limits: ImageLimits | None = None) -> Any:
    """Decode one image given as a PIL image, a path, or a ``datasets`` ``{"path", "bytes"}`` dict, to RGB.

    Errors are :class:`BadImageError` naming the record (``record_id``) and the image, because with lazily loaded
    datasets this is the first time the pixels are actually read.
    """
    from PIL import Image

    limits = limits or ImageLimits()
    label = f"record {record_id!r}: image {index}"
    if isinstance(image, Image.Image):
        try:
            check_geometry(image.size, image.mode, limits, str(index))
        except BadImageError as error:
            raise BadImageError(error.reason, f"record {record_id!r}: {error}") from error
        return _reduce(to_rgb(image), limits)
    if isinstance(image, dict):
        source = io.BytesIO(image["bytes"]) if image.get("bytes") else image.get("path")
        where = image.get("path") or "<bytes>"
    elif isinstance(image, (str, os.PathLike)):
        source = where = os.fspath(image)
    else:
        raise BadImageError(UNREADABLE_IMAGE, f"{label} has unsupported type {type(image).__name__}")
    if source is None:
        raise BadImageError(UNREADABLE_IMAGE, f"{label} has neither 'path' nor 'bytes'")
    try:
        return decode_image(source, where, limits)
    except BadImageError as error:
        cause = error.__cause__
        if error.reason == UNREADABLE_IMAGE and cause is not None:
            detail = f"record {record_id!r}: cannot decode image {index} ({where}): {cause}"
        else:
            detail = f"{label}: {error}"
        raise BadImageError(error.reason, detail) from error
