"""Image paths of a record stay inside ``image_root``: ``../``, absolute paths and symlinks that resolve outside it
are refused (a record of a downloaded data set must not make the trainer read ``/etc/passwd``)."""

from __future__ import annotations

import os

# Reason of a refused path (a key of `LoadReport.skipped`).
IMAGE_OUTSIDE_ROOT = "image_outside_root"


class ImagePathError(ValueError):
    """A record's image path that may not be read; ``reason`` is ``image_outside_root`` or ``malformed``."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


def resolve_image_path(root: str, path: str, *, allow_outside_root: bool = False) -> str:
    """The real path of the record's image ``path`` (relative to ``root``), refused unless it lies inside ``root``.

    Symlinks are followed (on ``root`` as well), so a link inside ``root`` pointing elsewhere is refused too. An
    absolute ``path`` is refused; ``allow_outside_root=True`` accepts absolute paths and anything they or a relative
    path resolve to. The file need not exist: a missing image is reported by the image check that follows.
    """
    if "\x00" in path:
        raise ImagePathError("malformed", f"image path {path!r} contains a NUL byte")
    if os.path.isabs(path) and not allow_outside_root:
        raise ImagePathError(
            IMAGE_OUTSIDE_ROOT, f"absolute image path {path} (pass allow_paths_outside_root=True to read it)"
        )
    try:
        real_root = os.path.realpath(root)
        real = os.path.realpath(os.path.join(real_root, path))
    except (OSError, ValueError) as error:  # a symlink loop, a name the OS refuses
        raise ImagePathError("malformed", f"image path {path!r} cannot be resolved: {error}") from error
    if not allow_outside_root and os.path.commonpath([real, real_root]) != real_root:
        raise ImagePathError(
            IMAGE_OUTSIDE_ROOT,
            f"image path {path} resolves to {real}, outside image_root {real_root} "
            "(pass allow_paths_outside_root=True to read it)",
        )
    return real
