"""The common base of every error distox raises for the user (bad input, missing data, ...).

The CLI prints these as one clear message and exits non-zero, never with a traceback.
"""
from __future__ import annotations


class DistoxError(ValueError):
    """Base class of user-facing errors."""
