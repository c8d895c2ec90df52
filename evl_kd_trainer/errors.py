"""The package's own error types, importable from library code and the command-line tools alike."""

from __future__ import annotations


class UserError(Exception):
    """Input that cannot be used (a recipe, flag, path or value); the message names the recipe, key or file."""
