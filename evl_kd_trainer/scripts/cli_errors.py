"""One-line errors for the command-line tools.

A recipe key, a flag, a path or a config range that cannot be used is the user's to fix, not a bug: the tools
print one line naming the recipe, key or file and exit with status 2, without a traceback. ``--traceback`` (or
``EVL_KD_DEBUG=1``) re-raises it with its traceback. Failures once training has started are not caught here:
they keep their tracebacks.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence

from evl_kd_trainer.errors import UserError  # noqa: F401  (re-exported: the old import path)

DEBUG_ENV = "EVL_KD_DEBUG"
DEBUG_FLAG = "--traceback"  # `--debug` is a TrainingArguments field
EXIT_USAGE = 2

# What a setup step raises for bad input: a config range (ValueError), a missing file (OSError), a wrong value type,
# an unknown name (KeyError), a missing optional dependency (ImportError, whose message names the package).
_INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, KeyError, OSError, ImportError)


_MARK = "_evl_kd_user_input"


@contextlib.contextmanager
def user_input() -> Iterator[None]:
    """Mark the errors of the enclosed setup steps (parsing, path checks, loading) as the user's input errors.

    The exception itself propagates unchanged (library callers and tests see its own type); ``run_cli`` prints a
    marked one as one line.
    """
    try:
        yield
    except _INPUT_ERRORS as err:
        setattr(err, _MARK, True)
        raise


def is_user_error(err: BaseException) -> bool:
    return isinstance(err, UserError) or bool(getattr(err, _MARK, False))


def one_line(err: BaseException) -> str:
    message = err.args[0] if isinstance(err, KeyError) and err.args else err
    return str(message) or type(err).__name__


def debug_requested(argv: Sequence[str]) -> bool:
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "").lower() in {"1", "true", "yes", "on"}


def run_cli(body: Callable[[list[str]], int | None], argv: Sequence[str] | None, prog: str) -> int:
    """Run ``body(argv)``; a :class:`UserError` becomes ``"<prog>: error: <message>"`` on stderr and status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [arg for arg in argv if arg != DEBUG_FLAG]
    try:
        return int(body(argv) or 0)
    except Exception as err:
        if debug or not is_user_error(err):
            raise
        print(f"{prog}: error: {one_line(err)}", file=sys.stderr)
        print(f"({DEBUG_FLAG} or {DEBUG_ENV}=1 shows the traceback)", file=sys.stderr)
        return EXIT_USAGE
