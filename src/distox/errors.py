"""The common base of every error distox raises for the user (bad input, missing data, ...).

The CLI prints these as one clear message and exits non-zero, never with a traceback.
"""
from __future__ import annotations


class DistoxError(ValueError):
    """Base class of user-facing errors."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for
    one-line error messages that wrap a library's exception."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
