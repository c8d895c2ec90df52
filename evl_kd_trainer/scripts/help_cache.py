"""A cache of the recipe commands' ``--help`` text, so that ``evl-kd distill --help`` answers at once.

Those commands' options are the fields of TRL's ``SFTConfig``, whose import takes torch, transformers and peft
with it (about 10 s on a 2-core machine, a minute beside other work). The text depends only on the installed
versions and on this package's sources, so it is built once per version set and source state and kept under
``$XDG_CACHE_HOME/evl_kd_trainer/help`` (``EVL_KD_HELP_CACHE=0`` turns the cache off).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

PACKAGES = ("evl_kd_trainer", "trl", "transformers", "peft", "accelerate", "torch")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "evl_kd_trainer" / "help"


def _fingerprint(prog: str) -> str:
    digest = hashlib.sha256(prog.encode())
    digest.update(sys.version.encode())
    for name in PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            digest.update(f"{name}={metadata.version(name)};".encode())
    # An editable install changes with its sources: every module's size and modification time.
    root = Path(__file__).resolve().parent.parent
    for path in sorted(root.rglob("*.py")):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    return digest.hexdigest()[:32]


def help_text(prog: str, print_help: Callable[[], object]) -> str:
    """The help ``print_help()`` prints (argparse's ``--help``: text, then ``SystemExit(0)``), cached."""
    enabled = os.environ.get("EVL_KD_HELP_CACHE", "1") != "0"
    path = cache_dir() / f"{prog.replace(' ', '-')}-{_fingerprint(prog)}.txt"
    if enabled and path.is_file():
        return path.read_text(encoding="utf-8")
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        try:
            print_help()
        except SystemExit as exit_:
            if exit_.code:
                raise
    text = buffer.getvalue()
    if enabled and text:
        with contextlib.suppress(OSError):  # a read-only home only costs speed
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
    return text
